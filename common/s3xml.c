/* s3xml.c - parsing S3 XML responses with expat, see s3xml.h.
 *
 * One expat parser per call, no namespace processing: element names are
 * matched by local name (anything after the last ':' of a prefixed name), so
 * the S3 default namespace and any prefix are both accepted. The parser keeps
 * a stack of known element ids and collects character data only inside the
 * leaf elements it wants, bounded to S3XML_TEXT_MAX bytes per element.
 *
 * Hostile bodies: any DOCTYPE or entity declaration stops the parse
 * (-EPROTO), which rules out entity expansion bombs and external entities;
 * nesting is bounded by S3XML_DEPTH_MAX. */
#include "s3xml.h"

#include "s3err.h"
#include "sbuf.h"

#include <errno.h>
#include <expat.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#define S3XML_TEXT_MAX (64 * 1024) /* bytes of text in one element */
#define S3XML_DEPTH_MAX 32	   /* S3 responses nest 4 deep at most */
#define S3XML_CHUNK (1024 * 1024)  /* bytes handed to XML_Parse at a time */

/* Known element names; everything else is S3XML_T_OTHER. */
enum s3xml_tag {
	S3XML_T_OTHER = 0,
	S3XML_T_ERROR,
	S3XML_T_CODE,
	S3XML_T_MESSAGE,
	S3XML_T_REQUEST_ID,
	S3XML_T_LIST_RESULT,
	S3XML_T_CONTENTS,
	S3XML_T_KEY,
	S3XML_T_SIZE,
	S3XML_T_ETAG,
	S3XML_T_LAST_MODIFIED,
	S3XML_T_COMMON_PREFIXES,
	S3XML_T_PREFIX,
	S3XML_T_IS_TRUNCATED,
	S3XML_T_NEXT_TOKEN,
	S3XML_T_KEY_COUNT,
	S3XML_T_INITIATE_RESULT,
	S3XML_T_UPLOAD_ID,
	S3XML_T_COMPLETE_RESULT,
	S3XML_T_COPY_OBJECT_RESULT,
	S3XML_T_COPY_PART_RESULT,
	S3XML_T_VERSIONS_RESULT,
	S3XML_T_VERSION,
	S3XML_T_DELETE_MARKER,
	S3XML_T_VERSION_ID,
	S3XML_T_NEXT_KEY_MARKER,
	S3XML_T_NEXT_VERSION_MARKER,
	S3XML_T_IS_LATEST,
};

static const struct {
	const char *name;
	enum s3xml_tag tag;
} s3xml_tags[] = {
    {"Error", S3XML_T_ERROR},
    {"Code", S3XML_T_CODE},
    {"Message", S3XML_T_MESSAGE},
    {"RequestId", S3XML_T_REQUEST_ID},
    {"ListBucketResult", S3XML_T_LIST_RESULT},
    {"Contents", S3XML_T_CONTENTS},
    {"Key", S3XML_T_KEY},
    {"Size", S3XML_T_SIZE},
    {"ETag", S3XML_T_ETAG},
    {"LastModified", S3XML_T_LAST_MODIFIED},
    {"CommonPrefixes", S3XML_T_COMMON_PREFIXES},
    {"Prefix", S3XML_T_PREFIX},
    {"IsTruncated", S3XML_T_IS_TRUNCATED},
    {"NextContinuationToken", S3XML_T_NEXT_TOKEN},
    {"KeyCount", S3XML_T_KEY_COUNT},
    {"InitiateMultipartUploadResult", S3XML_T_INITIATE_RESULT},
    {"UploadId", S3XML_T_UPLOAD_ID},
    {"CompleteMultipartUploadResult", S3XML_T_COMPLETE_RESULT},
    {"CopyObjectResult", S3XML_T_COPY_OBJECT_RESULT},
    {"CopyPartResult", S3XML_T_COPY_PART_RESULT},
    {"ListVersionsResult", S3XML_T_VERSIONS_RESULT},
    {"Version", S3XML_T_VERSION},
    {"DeleteMarker", S3XML_T_DELETE_MARKER},
    {"VersionId", S3XML_T_VERSION_ID},
    {"NextKeyMarker", S3XML_T_NEXT_KEY_MARKER},
    {"NextVersionIdMarker", S3XML_T_NEXT_VERSION_MARKER},
    {"IsLatest", S3XML_T_IS_LATEST},
};

/* What the caller expects at the root. */
enum s3xml_kind {
	S3XML_K_ERROR,	  /* s3xml_parse_error */
	S3XML_K_LIST,	  /* ListBucketResult */
	S3XML_K_INITIATE, /* InitiateMultipartUploadResult */
	S3XML_K_ETAG,	  /* Complete/CopyObject/CopyPart result */
};

struct s3xml_state {
	XML_Parser p;
	enum s3xml_kind kind;
	int rc;	   /* first failure, 0 while all is well */
	int depth; /* elements open, <= S3XML_DEPTH_MAX */
	enum s3xml_tag stack[S3XML_DEPTH_MAX];
	enum s3xml_tag root;  /* S3XML_T_OTHER until the root opens */
	int collecting;	      /* text of the innermost element is wanted */
	struct sbuf text;     /* that text */
	struct s3_error *err; /* always non-NULL inside a parse */
	/* list */
	int url_encoded;
	int versions; /* ListVersionsResult, not ListBucketResult */
	struct s3_list_result *list;
	struct s3_list_entry *entry; /* open <Contents>, or NULL */
	int have_truncated;
	int truncated;
	char *next_token;
	char *next_version;
	char *key_count;
	/* initiate */
	char *upload_id;
	/* etag results */
	char *etag;
};

/* Records the first failure and stops expat. */
static void s3xml_fail(struct s3xml_state *st, int rc)
{
	if (!st->rc)
		st->rc = rc;
	XML_StopParser(st->p, XML_FALSE);
}

/* Maps an element name to its tag, ignoring any namespace prefix. */
static enum s3xml_tag s3xml_lookup(const XML_Char *name)
{
	const char *local = strrchr(name, ':');
	size_t i;

	local = local ? local + 1 : name;
	for (i = 0; i < sizeof(s3xml_tags) / sizeof(s3xml_tags[0]); i++) {
		if (strcmp(s3xml_tags[i].name, local) == 0)
			return s3xml_tags[i].tag;
	}
	return S3XML_T_OTHER;
}

/* Copies src into dst[dst_len], truncating on a UTF-8 character boundary. */
static void s3xml_copy_trunc(char *dst, size_t dst_len, const char *src)
{
	size_t n = strlen(src);

	if (n >= dst_len) {
		n = dst_len - 1;
		while (n > 0 && ((unsigned char)src[n] & 0xc0) == 0x80)
			n--;
	}
	memcpy(dst, src, n);
	dst[n] = '\0';
}

static int s3xml_hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decodes an EncodingType=url value in place: %XX is a byte and '+' a space
 * (AWS encodes a space as '+' and a literal '+' as %2B; other stores send
 * %20, which decodes the same). A bad escape or an encoded NUL is -EPROTO. */
static int s3xml_url_decode(char *s)
{
	char *r = s, *w = s;
	int hi, lo;

	while (*r) {
		if (*r == '+') {
			*w++ = ' ';
			r++;
		} else if (*r == '%') {
			hi = s3xml_hexval(r[1]);
			lo = hi < 0 ? -1 : s3xml_hexval(r[2]);
			if (lo < 0 || (hi == 0 && lo == 0))
				return -EPROTO;
			*w++ = (char)(hi << 4 | lo);
			r += 3;
		} else {
			*w++ = *r++;
		}
	}
	*w = '\0';
	return 0;
}

/* Removes surrounding double quotes from an ETag ("&quot;abc&quot;" arrives
 * from expat as "\"abc\"") and copies it to out[out_len]. An empty or
 * too-long ETag is -EPROTO (a truncated ETag would never match). */
static int s3xml_etag_copy(const char *src, char *out, size_t out_len)
{
	size_t n = strlen(src);

	if (n >= 2 && src[0] == '"' && src[n - 1] == '"') {
		src++;
		n -= 2;
	}
	if (n == 0 || n >= out_len)
		return -EPROTO;
	memcpy(out, src, n);
	out[n] = '\0';
	return 0;
}

/* Parses a decimal uint64 with nothing else around it. 0 or -EPROTO. */
static int s3xml_parse_u64(const char *s, uint64_t *out)
{
	uint64_t v = 0;
	unsigned d;

	if (!*s)
		return -EPROTO;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -EPROTO;
		d = (unsigned)(*s - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -EPROTO;
		v = v * 10 + d;
	}
	*out = v;
	return 0;
}

/* Replaces *slot with a copy of s. 0 or -ENOMEM. */
static int s3xml_set_str(char **slot, const char *s)
{
	char *dup = strdup(s);

	if (!dup)
		return -ENOMEM;
	free(*slot);
	*slot = dup;
	return 0;
}

/* Is tag, a child of the root, one listed object (<Contents>, or for a
 * version listing <Version> and <DeleteMarker>)? */
static int s3xml_is_entry(const struct s3xml_state *st, enum s3xml_tag tag)
{
	if (st->versions)
		return tag == S3XML_T_VERSION || tag == S3XML_T_DELETE_MARKER;
	return tag == S3XML_T_CONTENTS;
}

/* Is the innermost element (at depth st->depth) one whose text we keep? */
static int s3xml_wanted(const struct s3xml_state *st)
{
	int d = st->depth;
	enum s3xml_tag t, parent;

	if (d < 2 || d > S3XML_DEPTH_MAX)
		return 0;
	t = st->stack[d - 1];
	parent = st->stack[d - 2];
	if (st->root == S3XML_T_ERROR)
		return d == 2 && (t == S3XML_T_CODE || t == S3XML_T_MESSAGE ||
				  t == S3XML_T_REQUEST_ID);
	switch (st->kind) {
	case S3XML_K_LIST:
		if (d == 2 && st->versions)
			return t == S3XML_T_IS_TRUNCATED ||
			       t == S3XML_T_NEXT_KEY_MARKER ||
			       t == S3XML_T_NEXT_VERSION_MARKER;
		if (d == 2)
			return t == S3XML_T_IS_TRUNCATED ||
			       t == S3XML_T_NEXT_TOKEN ||
			       t == S3XML_T_KEY_COUNT;
		if (d == 3 && s3xml_is_entry(st, parent))
			return t == S3XML_T_KEY || t == S3XML_T_SIZE ||
			       t == S3XML_T_ETAG ||
			       t == S3XML_T_LAST_MODIFIED ||
			       (st->versions && (t == S3XML_T_VERSION_ID ||
						 t == S3XML_T_IS_LATEST));
		if (d == 3 && parent == S3XML_T_COMMON_PREFIXES)
			return t == S3XML_T_PREFIX;
		return 0;
	case S3XML_K_INITIATE:
		return d == 2 && t == S3XML_T_UPLOAD_ID;
	case S3XML_K_ETAG:
		return d == 2 && t == S3XML_T_ETAG;
	case S3XML_K_ERROR:
		return 0;
	}
	return 0;
}

/* Is tag an acceptable root for st->kind? <Error> always is. */
static int s3xml_root_ok(const struct s3xml_state *st, enum s3xml_tag tag)
{
	if (tag == S3XML_T_ERROR)
		return 1;
	switch (st->kind) {
	case S3XML_K_LIST:
		return tag == (st->versions ? S3XML_T_VERSIONS_RESULT
					    : S3XML_T_LIST_RESULT);
	case S3XML_K_INITIATE:
		return tag == S3XML_T_INITIATE_RESULT;
	case S3XML_K_ETAG:
		return tag == S3XML_T_COMPLETE_RESULT ||
		       tag == S3XML_T_COPY_OBJECT_RESULT ||
		       tag == S3XML_T_COPY_PART_RESULT;
	case S3XML_K_ERROR:
		return 1; /* another root is reported after the parse */
	}
	return 0;
}

/* The list arrays carry no capacity: it is implicitly 16, then the next
 * power of two above the count. Returns the element count to grow to before
 * appending to an array of n, or 0 when there is room. */
static size_t s3xml_grow_to(size_t n)
{
	if (n == 0)
		return 16;
	if (n < 16 || (n & (n - 1)) != 0)
		return 0;
	return 2 * n; /* n entries came from a body in memory: no overflow */
}

/* Opens a <Contents>: a new zeroed entry at the end of the list. */
static int s3xml_entry_open(struct s3xml_state *st)
{
	struct s3_list_result *l = st->list;
	struct s3_list_entry *e = l->entries;
	size_t cap = s3xml_grow_to(l->n_entries);

	if (cap) {
		e = realloc(e, cap * sizeof(*e));
		if (!e)
			return -ENOMEM;
		l->entries = e;
	}
	st->entry = &e[l->n_entries];
	memset(st->entry, 0, sizeof(*st->entry));
	l->n_entries++;
	return 0;
}

/* Appends a decoded CommonPrefixes/Prefix; takes ownership of s. */
static int s3xml_prefix_add(struct s3xml_state *st, char *s)
{
	struct s3_list_result *l = st->list;
	char **p = l->prefixes;
	size_t cap = s3xml_grow_to(l->n_prefixes);

	if (cap) {
		p = realloc(p, cap * sizeof(*p));
		if (!p)
			goto fail;
		l->prefixes = p;
	}
	p[l->n_prefixes++] = s;
	return 0;
fail:
	free(s);
	return -ENOMEM;
}

/* Detaches the collected key or prefix, url-decoded when the listing asks
 * for it. An empty name is -EPROTO. */
static int s3xml_take_name(struct s3xml_state *st, char **out)
{
	char *s = sbuf_detach(&st->text);
	int rc = 0;

	if (!s)
		return -ENOMEM;
	if (st->url_encoded)
		rc = s3xml_url_decode(s);
	if (!rc && !*s)
		rc = -EPROTO;
	if (rc) {
		free(s);
		return rc;
	}
	*out = s;
	return 0;
}

/* Handles the end of a wanted element of a ListBucketResult. */
static int s3xml_list_end(struct s3xml_state *st, enum s3xml_tag t,
			  enum s3xml_tag parent)
{
	const char *txt = sbuf_str(&st->text);
	struct s3_list_entry *e = st->entry;
	char *name;
	int rc;

	if (parent == S3XML_T_COMMON_PREFIXES) {
		rc = s3xml_take_name(st, &name);
		return rc ? rc : s3xml_prefix_add(st, name);
	}
	if (s3xml_is_entry(st, parent)) {
		if (!e)
			return -EPROTO;
		switch (t) {
		case S3XML_T_KEY:
			if (e->key)
				return -EPROTO;
			return s3xml_take_name(st, &e->key);
		case S3XML_T_VERSION_ID:
			if (e->version_id || !*txt)
				return -EPROTO;
			return s3xml_set_str(&e->version_id, txt);
		case S3XML_T_IS_LATEST:
			e->is_latest = !strcmp(txt, "true");
			return 0;
		case S3XML_T_SIZE:
			return s3xml_parse_u64(txt, &e->size);
		case S3XML_T_ETAG:
			return s3xml_etag_copy(txt, e->etag, sizeof(e->etag));
		case S3XML_T_LAST_MODIFIED:
			return s3xml_parse_time(txt, &e->mtime) ? -EPROTO : 0;
		default:
			return 0;
		}
	}
	switch (t) {
	case S3XML_T_IS_TRUNCATED:
		if (strcmp(txt, "true") == 0)
			st->truncated = 1;
		else if (strcmp(txt, "false") == 0)
			st->truncated = 0;
		else
			return -EPROTO;
		st->have_truncated = 1;
		return 0;
	case S3XML_T_NEXT_TOKEN:
		return s3xml_set_str(&st->next_token, txt);
	case S3XML_T_NEXT_KEY_MARKER: /* a key: decoded as keys are */
		free(st->next_token);
		st->next_token = NULL;
		return s3xml_take_name(st, &st->next_token);
	case S3XML_T_NEXT_VERSION_MARKER:
		return s3xml_set_str(&st->next_version, txt);
	case S3XML_T_KEY_COUNT:
		return s3xml_set_str(&st->key_count, txt);
	default:
		return 0;
	}
}

/* Handles the end of a wanted element. */
static int s3xml_text_end(struct s3xml_state *st)
{
	enum s3xml_tag t = st->stack[st->depth - 1];
	enum s3xml_tag parent = st->stack[st->depth - 2];
	const char *txt = sbuf_str(&st->text);

	if (st->root == S3XML_T_ERROR) {
		if (t == S3XML_T_CODE)
			s3xml_copy_trunc(st->err->code, sizeof(st->err->code),
					 txt);
		else if (t == S3XML_T_MESSAGE)
			s3xml_copy_trunc(st->err->message,
					 sizeof(st->err->message), txt);
		else
			s3xml_copy_trunc(st->err->request_id,
					 sizeof(st->err->request_id), txt);
		return 0;
	}
	switch (st->kind) {
	case S3XML_K_LIST:
		return s3xml_list_end(st, t, parent);
	case S3XML_K_INITIATE:
		if (st->upload_id || !*txt)
			return -EPROTO;
		st->upload_id = sbuf_detach(&st->text);
		return st->upload_id ? 0 : -ENOMEM;
	case S3XML_K_ETAG:
		if (st->etag)
			return -EPROTO;
		st->etag = sbuf_detach(&st->text);
		return st->etag ? 0 : -ENOMEM;
	case S3XML_K_ERROR:
		return 0;
	}
	return 0;
}

static void XMLCALL s3xml_start(void *ud, const XML_Char *name,
				const XML_Char **attrs)
{
	struct s3xml_state *st = ud;
	enum s3xml_tag tag;
	int rc;

	(void)attrs;
	if (st->rc)
		return;
	if (st->depth >= S3XML_DEPTH_MAX) {
		s3xml_fail(st, -EPROTO);
		return;
	}
	tag = s3xml_lookup(name);
	if (st->depth == 0) {
		if (!s3xml_root_ok(st, tag)) {
			s3xml_fail(st, -EPROTO);
			return;
		}
		st->root = tag;
	}
	st->stack[st->depth++] = tag;
	if (st->kind == S3XML_K_LIST && st->root != S3XML_T_ERROR &&
	    st->depth == 2 && s3xml_is_entry(st, tag)) {
		rc = s3xml_entry_open(st);
		if (rc) {
			s3xml_fail(st, rc);
			return;
		}
		st->entry->delete_marker = tag == S3XML_T_DELETE_MARKER;
	}
	sbuf_reset(&st->text);
	st->collecting = s3xml_wanted(st);
}

static void XMLCALL s3xml_end(void *ud, const XML_Char *name)
{
	struct s3xml_state *st = ud;
	int rc = 0;

	(void)name;
	if (st->rc)
		return;
	if (st->collecting)
		rc = s3xml_text_end(st);
	else if (st->kind == S3XML_K_LIST && st->root != S3XML_T_ERROR &&
		 st->depth == 2 && s3xml_is_entry(st, st->stack[1])) {
		if (!st->entry || !st->entry->key ||
		    (st->versions && !st->entry->version_id))
			rc = -EPROTO; /* an entry without <Key> (<VersionId>) */
		st->entry = NULL;
	}
	if (rc) {
		s3xml_fail(st, rc);
		return;
	}
	st->depth--;
	st->collecting = 0;
	sbuf_reset(&st->text);
}

static void XMLCALL s3xml_chars(void *ud, const XML_Char *s, int len)
{
	struct s3xml_state *st = ud;
	int rc;

	if (st->rc || !st->collecting || len <= 0)
		return;
	if ((size_t)len > S3XML_TEXT_MAX - st->text.len) {
		s3xml_fail(st, -EPROTO);
		return;
	}
	rc = sbuf_add(&st->text, s, (size_t)len);
	if (rc)
		s3xml_fail(st, rc);
}

/* Any DOCTYPE (and so any entity declaration) is refused. */
static void XMLCALL s3xml_doctype(void *ud, const XML_Char *name,
				  const XML_Char *sysid, const XML_Char *pubid,
				  int has_internal_subset)
{
	(void)name;
	(void)sysid;
	(void)pubid;
	(void)has_internal_subset;
	s3xml_fail(ud, -EPROTO);
}

static void XMLCALL s3xml_entity(void *ud, const XML_Char *name, int is_param,
				 const XML_Char *value, int value_len,
				 const XML_Char *base, const XML_Char *sysid,
				 const XML_Char *pubid,
				 const XML_Char *notation)
{
	(void)name;
	(void)is_param;
	(void)value;
	(void)value_len;
	(void)base;
	(void)sysid;
	(void)pubid;
	(void)notation;
	s3xml_fail(ud, -EPROTO);
}

/* Runs expat over body with st already set up (kind, err, outputs).
 * Returns 0 when the document is well-formed and every handler succeeded,
 * else the first failure (-EPROTO for bad XML, -ENOMEM...). */
static int s3xml_run(struct s3xml_state *st, const char *body, size_t len)
{
	size_t off = 0, n;
	int final, rc = 0;

	st->p = XML_ParserCreate(NULL);
	if (!st->p)
		return -ENOMEM;
	XML_SetUserData(st->p, st);
	XML_SetElementHandler(st->p, s3xml_start, s3xml_end);
	XML_SetCharacterDataHandler(st->p, s3xml_chars);
	XML_SetStartDoctypeDeclHandler(st->p, s3xml_doctype);
	XML_SetEntityDeclHandler(st->p, s3xml_entity);
	XML_SetParamEntityParsing(st->p, XML_PARAM_ENTITY_PARSING_NEVER);
	if (!body)
		len = 0;
	do {
		n = len - off < S3XML_CHUNK ? len - off : S3XML_CHUNK;
		final = off + n == len;
		if (XML_Parse(st->p, n ? body + off : "", (int)n, final) !=
		    XML_STATUS_OK) {
			rc = st->rc ? st->rc : -EPROTO;
			goto fail;
		}
		off += n;
	} while (!final);
	rc = st->rc;
fail:
	XML_ParserFree(st->p);
	st->p = NULL;
	return rc;
}

/* Frees what a parse collected but did not hand over. */
static void s3xml_state_free(struct s3xml_state *st)
{
	sbuf_free(&st->text);
	free(st->next_token);
	free(st->next_version);
	free(st->key_count);
	free(st->upload_id);
	free(st->etag);
}

/* Sets up st for kind; err is the caller's or local_err. */
static void s3xml_state_init(struct s3xml_state *st, enum s3xml_kind kind,
			     struct s3_error *err, struct s3_error *local_err)
{
	memset(st, 0, sizeof(*st));
	st->kind = kind;
	st->text = (struct sbuf)SBUF_INIT;
	st->err = err ? err : local_err;
	memset(st->err, 0, sizeof(*st->err));
}

/* After a successful parse whose root was <Error>: the mapped -errno. */
static int s3xml_error_rc(const struct s3xml_state *st)
{
	return -errmap_s3(0, st->err->code);
}

int s3xml_parse_error(const char *body, size_t len, struct s3_error *err)
{
	struct s3_error local;
	struct s3xml_state st;
	int rc;

	s3xml_state_init(&st, S3XML_K_ERROR, err, &local);
	rc = s3xml_run(&st, body, len);
	if (rc)
		goto fail;
	if (st.root != S3XML_T_ERROR)
		rc = -ENOENT;
fail:
	s3xml_state_free(&st);
	return rc;
}

/* s3xml_parse_list or, versions set, s3xml_parse_list_versions. */
static int s3xml_parse_listing(const char *body, size_t len, int url_encoded,
			       int versions, struct s3_list_result *out,
			       struct s3_error *err)
{
	size_t n_entries = out->n_entries, n_prefixes = out->n_prefixes;
	struct s3_error local;
	struct s3xml_state st;
	size_t i;
	int rc;

	s3xml_state_init(&st, S3XML_K_LIST, err, &local);
	st.url_encoded = url_encoded;
	st.versions = versions;
	st.list = out;
	rc = s3xml_run(&st, body, len);
	if (rc)
		goto fail;
	if (st.root == S3XML_T_ERROR) {
		rc = s3xml_error_rc(&st);
		goto fail;
	}
	/* A truncated page without a token would restart the listing. */
	if (!st.have_truncated || (st.truncated && !st.next_token)) {
		rc = -EPROTO;
		goto fail;
	}
	out->truncated = st.truncated;
	free(out->next_token);
	out->next_token = st.next_token;
	st.next_token = NULL;
	free(out->next_version);
	out->next_version = st.next_version;
	st.next_version = NULL;
	if (st.key_count) {
		free(out->key_count_str);
		out->key_count_str = st.key_count;
		st.key_count = NULL;
	}
	s3xml_state_free(&st);
	return 0;
fail:
	/* Leave *out as it was before this page. */
	for (i = n_entries; i < out->n_entries; i++) {
		free(out->entries[i].key);
		free(out->entries[i].version_id);
	}
	out->n_entries = n_entries;
	for (i = n_prefixes; i < out->n_prefixes; i++)
		free(out->prefixes[i]);
	out->n_prefixes = n_prefixes;
	s3xml_state_free(&st);
	return rc;
}

int s3xml_parse_list(const char *body, size_t len, int url_encoded,
		     struct s3_list_result *out, struct s3_error *err)
{
	return s3xml_parse_listing(body, len, url_encoded, 0, out, err);
}

int s3xml_parse_list_versions(const char *body, size_t len, int url_encoded,
			      struct s3_list_result *out, struct s3_error *err)
{
	return s3xml_parse_listing(body, len, url_encoded, 1, out, err);
}

void s3xml_list_free(struct s3_list_result *r)
{
	size_t i;

	if (!r)
		return;
	for (i = 0; i < r->n_entries; i++) {
		free(r->entries[i].key);
		free(r->entries[i].version_id);
	}
	free(r->entries);
	for (i = 0; i < r->n_prefixes; i++)
		free(r->prefixes[i]);
	free(r->prefixes);
	free(r->next_token);
	free(r->next_version);
	free(r->key_count_str);
	memset(r, 0, sizeof(*r));
}

int s3xml_parse_initiate(const char *body, size_t len, char **upload_id,
			 struct s3_error *err)
{
	struct s3_error local;
	struct s3xml_state st;
	int rc;

	*upload_id = NULL;
	s3xml_state_init(&st, S3XML_K_INITIATE, err, &local);
	rc = s3xml_run(&st, body, len);
	if (rc)
		goto fail;
	if (st.root == S3XML_T_ERROR) {
		rc = s3xml_error_rc(&st);
		goto fail;
	}
	if (!st.upload_id) {
		rc = -EPROTO;
		goto fail;
	}
	*upload_id = st.upload_id;
	st.upload_id = NULL;
fail:
	s3xml_state_free(&st);
	return rc;
}

int s3xml_parse_etag_result(const char *body, size_t len, char *etag_out,
			    size_t etag_len, struct s3_error *err)
{
	struct s3_error local;
	struct s3xml_state st;
	int rc;

	if (etag_len)
		etag_out[0] = '\0';
	s3xml_state_init(&st, S3XML_K_ETAG, err, &local);
	rc = s3xml_run(&st, body, len);
	if (rc)
		goto fail;
	if (st.root == S3XML_T_ERROR) {
		rc = s3xml_error_rc(&st);
		goto fail;
	}
	if (!st.etag) {
		rc = -EPROTO;
		goto fail;
	}
	rc = s3xml_etag_copy(st.etag, etag_out, etag_len);
fail:
	s3xml_state_free(&st);
	return rc;
}

/* Reads exactly n digits from *s into *out and advances *s. 0 or -EINVAL. */
static int s3xml_digits(const char **s, int n, int *out)
{
	int v = 0;

	while (n--) {
		if (**s < '0' || **s > '9')
			return -EINVAL;
		v = v * 10 + (**s - '0');
		(*s)++;
	}
	*out = v;
	return 0;
}

/* Consumes the expected separator c. 0 or -EINVAL. */
static int s3xml_sep(const char **s, char c)
{
	if (**s != c)
		return -EINVAL;
	(*s)++;
	return 0;
}

int s3xml_parse_time(const char *s, time_t *out)
{
	struct tm tm = {0}, back;
	int y, mo, d, h, mi, sec;
	time_t t;

	if (!s || !out)
		return -EINVAL;
	if (s3xml_digits(&s, 4, &y) || s3xml_sep(&s, '-') ||
	    s3xml_digits(&s, 2, &mo) || s3xml_sep(&s, '-') ||
	    s3xml_digits(&s, 2, &d) || s3xml_sep(&s, 'T') ||
	    s3xml_digits(&s, 2, &h) || s3xml_sep(&s, ':') ||
	    s3xml_digits(&s, 2, &mi) || s3xml_sep(&s, ':') ||
	    s3xml_digits(&s, 2, &sec))
		return -EINVAL;
	if (*s == '.') {
		s++;
		if (*s < '0' || *s > '9')
			return -EINVAL;
		while (*s >= '0' && *s <= '9')
			s++; /* fractions of a second are dropped */
	}
	if (s[0] != 'Z' || s[1] != '\0')
		return -EINVAL;
	if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 ||
	    sec > 59)
		return -EINVAL;
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = sec;
	t = timegm(&tm);
	/* timegm() normalises Feb 30 into March: refuse what moved. */
	if (!gmtime_r(&t, &back) || back.tm_mday != d ||
	    back.tm_mon != mo - 1 || back.tm_year != y - 1900)
		return -EINVAL;
	*out = t;
	return 0;
}
