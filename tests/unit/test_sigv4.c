/* test_sigv4.c - SigV4 against AWS's published vectors.
 *
 * The table holds vectors of the AWS SigV4 test suite (aws-sig-v4-test-suite,
 * 2015 edition: AKIDEXAMPLE, us-east-1, service "service", 20150830T123600Z)
 * and the S3 "GET Object" example of the S3 API reference. For each one the
 * canonical request, the string to sign and the Authorization header are
 * checked byte for byte against the published .creq, .sts and .authz.
 *
 * Not covered, on purpose: the normalize-path vectors that remove "." and
 * ".." segments or merge slashes (get-relative*, get-slash*); that rule is
 * for non-S3 services and S3 signs the path as sent. The space vector of
 * that group (get-space) is covered, since it needs no normalisation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "hash.h"
#include "sbuf.h"
#include "sigv4.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* The vector table is laid out by hand, one field a line. */
/* clang-format off */
#define SUITE_TIME ((time_t)1440938160) /* 2015-08-30T12:36:00Z */
#define S3_TIME ((time_t)1369353600)	/* 2013-05-24T00:00:00Z */

/* The .sts and .authz of the suite differ only in the hash, the signed
 * headers and the signature; the macros spell out the rest literally. */
#define SUITE_STS(hash)                                                        \
	"AWS4-HMAC-SHA256\n"                                                   \
	"20150830T123600Z\n"                                                   \
	"20150830/us-east-1/service/aws4_request\n" hash
#define SUITE_AUTHZ(signed_headers, sig)                                       \
	"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/" \
	"aws4_request, SignedHeaders=" signed_headers ", Signature=" sig

#define EMPTY_HASH HASH_SHA256_EMPTY
#define HOST {"Host", "example.amazonaws.com"}
#define DATE {"X-Amz-Date", "20150830T123600Z"}
#define UNRESERVED                                                             \
	"-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

static const struct sigv4_credentials suite_cred = {
	.access_key_id = "AKIDEXAMPLE",
	.secret_access_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
	.region = "us-east-1",
	.service = "service",
};

static const struct sigv4_credentials s3_cred = {
	.access_key_id = "AKIAIOSFODNN7EXAMPLE",
	.secret_access_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
	.region = "us-east-1",
	.service = "s3",
};

struct vector {
	const char *name;
	const struct sigv4_credentials *cred;
	time_t t;
	const char *method;
	const char *raw_path; /* as in the .req, before sigv4_encode_path() */
	struct sigv4_kv query[2];
	size_t n_query;
	struct sigv4_kv headers[6];
	size_t n_headers;
	const char *body; /* the payload hash is its SHA-256 */
	const char *creq;
	const char *sts;
	const char *authz;
};

static const struct vector vectors[] = {
	{
		.name = "get-vanilla",
		.cred = &suite_cred,
		.t = SUITE_TIME,
		.method = "GET",
		.raw_path = "/",
		.headers = {HOST, DATE},
		.n_headers = 2,
		.body = "",
		.creq = "GET\n/\n\n"
			"host:example.amazonaws.com\n"
			"x-amz-date:20150830T123600Z\n\n"
			"host;x-amz-date\n" EMPTY_HASH,
		.sts = SUITE_STS("bb579772317eb040ac9ed261061d46c1f17a8133879d"
				 "6129b6e1c25292927e63"),
		.authz = SUITE_AUTHZ("host;x-amz-date",
				     "5fa00fa31553b73ebf1942676e86291e8372ff2a"
				     "2260956d9b8aae1d763fbf31"),
	},
	{
		.name = "get-vanilla-empty-query-key",
		.cred = &suite_cred,
		.t = SUITE_TIME,
		.method = "GET",
		.raw_path = "/",
		.query = {{"Param1", "value1"}},
		.n_query = 1,
		.headers = {HOST, DATE},
		.n_headers = 2,
		.body = "",
		.creq = "GET\n/\nParam1=value1\n"
			"host:example.amazonaws.com\n"
			"x-amz-date:20150830T123600Z\n\n"
			"host;x-amz-date\n" EMPTY_HASH,
		.sts = SUITE_STS("1e24db194ed7d0eec2de28d7369675a243488e08526e"
				 "8c1c73571282f7c517ab"),
		.authz = SUITE_AUTHZ("host;x-amz-date",
				     "a67d582fa61cc504c4bae71f336f98b97f1ea3c7"
				     "a6bfe1b6e45aec72011b9aeb"),
	},
	{
		.name = "get-vanilla-query-order-key",
		.cred = &suite_cred,
		.t = SUITE_TIME,
		.method = "GET",
		.raw_path = "/",
		.query = {{"Param1", "value2"}, {"Param1", "Value1"}},
		.n_query = 2,
		.headers = {HOST, DATE},
		.n_headers = 2,
		.body = "",
		.creq = "GET\n/\nParam1=Value1&Param1=value2\n"
			"host:example.amazonaws.com\n"
			"x-amz-date:20150830T123600Z\n\n"
			"host;x-amz-date\n" EMPTY_HASH,
		.sts = SUITE_STS("704b4cef673542d84cdff252633f065e8daeba5f168b"
				 "77116f8b1bcaf3d38f89"),
		.authz = SUITE_AUTHZ("host;x-amz-date",
				     "eedbc4e291e521cf13422ffca22be7d2eb8146ee"
				     "cf653089df300a15b2382bd1"),
	},
	{
		.name = "get-vanilla-query-order-key-case",
		.cred = &suite_cred,
		.t = SUITE_TIME,
		.method = "GET",
		.raw_path = "/",
		.query = {{"Param2", "value2"}, {"Param1", "value1"}},
		.n_query = 2,
		.headers = {HOST, DATE},
		.n_headers = 2,
		.body = "",
		.creq = "GET\n/\nParam1=value1&Param2=value2\n"
			"host:example.amazonaws.com\n"
			"x-amz-date:20150830T123600Z\n\n"
			"host;x-amz-date\n" EMPTY_HASH,
		.sts = SUITE_STS("816cd5b414d056048ba4f7c5386d6e0533120fb1fcfa"
				 "93762cf0fc39e2cf19e0"),
		.authz = SUITE_AUTHZ("host;x-amz-date",
				     "b97d918cfa904a5beff61c982a1b6f458b799221"
				     "646efd99d3219ec94cdf2500"),
	},
	{
		.name = "get-vanilla-query-order-value",
		.cred = &suite_cred,
		.t = SUITE_TIME,
		.method = "GET",
		.raw_path = "/",
		.query = {{"Param1", "value2"}, {"Param1", "value1"}},
		.n_query = 2,
		.headers = {HOST, DATE},
		.n_headers = 2,
		.body = "",
		.creq = "GET\n/\nParam1=value1&Param1=value2\n"
			"host:example.amazonaws.com\n"
			"x-amz-date:20150830T123600Z\n\n"
			"host;x-amz-date\n" EMPTY_HASH,
		.sts = SUITE_STS("c968629d70850097a2d8781c9bf7edcb988b04cac14c"
				 "ca9be4acc3595f884606"),
		.authz = SUITE_AUTHZ("host;x-amz-date",
				     "5772eed61e12b33fae39ee5e7012498b51d56abc"
				     "0abb7c60486157bd471c4694"),
	},
	{
		.name = "get-vanilla-query-unreserved",
		.cred = &suite_cred,
		.t = SUITE_TIME,
		.method = "GET",
		.raw_path = "/",
		.query = {{UNRESERVED, UNRESERVED}},
		.n_query = 1,
		.headers = {HOST, DATE},
		.n_headers = 2,
		.body = "",
		.creq = "GET\n/\n" UNRESERVED "=" UNRESERVED "\n"
			"host:example.amazonaws.com\n"
			"x-amz-date:20150830T123600Z\n\n"
			"host;x-amz-date\n" EMPTY_HASH,
		.sts = SUITE_STS("c30d4703d9f799439be92736156d47ccfb2d879ddf56"
				 "f5befa6d1d6aab979177"),
		.authz = SUITE_AUTHZ("host;x-amz-date",
				     "9c3e54bfcdf0b19771a7f523ee5669cdf59bc7cc"
				     "0884027167c21bb143a40197"),
	},
	{
		.name = "get-vanilla-utf8-query",
		.cred = &suite_cred,
		.t = SUITE_TIME,
		.method = "GET",
		.raw_path = "/",
		.query = {{"\xe1\x88\xb4", "bar"}}, /* U+1234 */
		.n_query = 1,
		.headers = {HOST, DATE},
		.n_headers = 2,
		.body = "",
		.creq = "GET\n/\n%E1%88%B4=bar\n"
			"host:example.amazonaws.com\n"
			"x-amz-date:20150830T123600Z\n\n"
			"host;x-amz-date\n" EMPTY_HASH,
		.sts = SUITE_STS("eb30c5bed55734080471a834cc727ae56beb50e5f39d"
				 "1bff6d0d38cb192a7073"),
		.authz = SUITE_AUTHZ("host;x-amz-date",
				     "2cdec8eed098649ff3a119c94853b13c643bcf08"
				     "f8b0a1d91e12c9027818dd04"),
	},
	{
		.name = "get-unreserved",
		.cred = &suite_cred,
		.t = SUITE_TIME,
		.method = "GET",
		.raw_path = "/" UNRESERVED,
		.headers = {HOST, DATE},
		.n_headers = 2,
		.body = "",
		.creq = "GET\n/" UNRESERVED "\n\n"
			"host:example.amazonaws.com\n"
			"x-amz-date:20150830T123600Z\n\n"
			"host;x-amz-date\n" EMPTY_HASH,
		.sts = SUITE_STS("6a968768eefaa713e2a6b16b589a8ea192661f098f37"
				 "349f4e2c0082757446f9"),
		.authz = SUITE_AUTHZ("host;x-amz-date",
				     "07ef7494c76fa4850883e2b006601f940f8a34d4"
				     "04d0cfa977f52a65bbf5f24f"),
	},
	{
		.name = "get-utf8",
		.cred = &suite_cred,
		.t = SUITE_TIME,
		.method = "GET",
		.raw_path = "/\xe1\x88\xb4", /* U+1234 */
		.headers = {HOST, DATE},
		.n_headers = 2,
		.body = "",
		.creq = "GET\n/%E1%88%B4\n\n"
			"host:example.amazonaws.com\n"
			"x-amz-date:20150830T123600Z\n\n"
			"host;x-amz-date\n" EMPTY_HASH,
		.sts = SUITE_STS("2a0a97d02205e45ce2e994789806b19270cfbbb0921b"
				 "278ccf58f5249ac42102"),
		.authz = SUITE_AUTHZ("host;x-amz-date",
				     "8318018e0b0f223aa2bbf98705b62bb787dc9c0e"
				     "678f255a891fd03141be5d85"),
	},
	{
		/* normalize-path/get-space: no segment to normalise. */
		.name = "get-space",
		.cred = &suite_cred,
		.t = SUITE_TIME,
		.method = "GET",
		.raw_path = "/example space/",
		.headers = {HOST, DATE},
		.n_headers = 2,
		.body = "",
		.creq = "GET\n/example%20space/\n\n"
			"host:example.amazonaws.com\n"
			"x-amz-date:20150830T123600Z\n\n"
			"host;x-amz-date\n" EMPTY_HASH,
		.sts = SUITE_STS("63ee75631ed7234ae61b5f736dfc7754cdccfedbff4b"
				 "5128a915706ee9390d86"),
		.authz = SUITE_AUTHZ("host;x-amz-date",
				     "652487583200325589f1fba4c7e578f72c47cb61"
				     "beeca81406b39ddec1366741"),
	},
	{
		.name = "get-header-key-duplicate",
		.cred = &suite_cred,
		.t = SUITE_TIME,
		.method = "GET",
		.raw_path = "/",
		.headers = {HOST,
			    {"My-Header1", "value2"},
			    {"My-Header1", "value2"},
			    {"My-Header1", "value1"},
			    DATE},
		.n_headers = 5,
		.body = "",
		.creq = "GET\n/\n\n"
			"host:example.amazonaws.com\n"
			"my-header1:value2,value2,value1\n"
			"x-amz-date:20150830T123600Z\n\n"
			"host;my-header1;x-amz-date\n" EMPTY_HASH,
		.sts = SUITE_STS("dc7f04a3abfde8d472b0ab1a418b741b7c67174dad15"
				 "51b4117b15527fbe966c"),
		.authz = SUITE_AUTHZ("host;my-header1;x-amz-date",
				     "c9d5ea9f3f72853aea855b47ea873832890dbdd1"
				     "83b4468f858259531a5138ea"),
	},
	{
		/* The .req folds the header over three lines
		 * ("My-Header1:value1\n  value2\n     value3") and the .creq
		 * reads each line as one value: "value1,value2,value3". The
		 * caller hands the three lines over as three values. */
		.name = "get-header-value-multiline",
		.cred = &suite_cred,
		.t = SUITE_TIME,
		.method = "GET",
		.raw_path = "/",
		.headers = {HOST,
			    {"My-Header1", "value1"},
			    {"My-Header1", "  value2"},
			    {"My-Header1", "     value3"},
			    DATE},
		.n_headers = 5,
		.body = "",
		.creq = "GET\n/\n\n"
			"host:example.amazonaws.com\n"
			"my-header1:value1,value2,value3\n"
			"x-amz-date:20150830T123600Z\n\n"
			"host;my-header1;x-amz-date\n" EMPTY_HASH,
		.sts = SUITE_STS("b7b6cbfd8a0430b78891e986784da2630c8a135a8595"
				 "cec25b26ea94f926ee55"),
		.authz = SUITE_AUTHZ("host;my-header1;x-amz-date",
				     "ba17b383a53190154eb5fa66a1b836cc297cc0a3"
				     "d70a5d00705980573d8ff790"),
	},
	{
		.name = "get-header-value-order",
		.cred = &suite_cred,
		.t = SUITE_TIME,
		.method = "GET",
		.raw_path = "/",
		.headers = {HOST,
			    {"My-Header1", "value4"},
			    {"My-Header1", "value1"},
			    {"My-Header1", "value3"},
			    {"My-Header1", "value2"},
			    DATE},
		.n_headers = 6,
		.body = "",
		.creq = "GET\n/\n\n"
			"host:example.amazonaws.com\n"
			"my-header1:value4,value1,value3,value2\n"
			"x-amz-date:20150830T123600Z\n\n"
			"host;my-header1;x-amz-date\n" EMPTY_HASH,
		.sts = SUITE_STS("31ce73cd3f3d9f66977ad3dd957dc47af14df92fcd85"
				 "09f59b349e9137c58b86"),
		.authz = SUITE_AUTHZ("host;my-header1;x-amz-date",
				     "08c7e5a9acfcfeb3ab6b2185e75ce8b1deb5e634"
				     "ec47601a50643f830c755c01"),
	},
	{
		.name = "get-header-value-trim",
		.cred = &suite_cred,
		.t = SUITE_TIME,
		.method = "GET",
		.raw_path = "/",
		.headers = {HOST,
			    {"My-Header1", " value1"},
			    {"My-Header2", " \"a   b   c\""},
			    DATE},
		.n_headers = 4,
		.body = "",
		.creq = "GET\n/\n\n"
			"host:example.amazonaws.com\n"
			"my-header1:value1\n"
			"my-header2:\"a b c\"\n"
			"x-amz-date:20150830T123600Z\n\n"
			"host;my-header1;my-header2;x-amz-date\n" EMPTY_HASH,
		.sts = SUITE_STS("a726db9b0df21c14f559d0a978e563112acb1b9e0547"
				 "6f0a6a1c7d68f28605c7"),
		.authz = SUITE_AUTHZ("host;my-header1;my-header2;x-amz-date",
				     "acc3ed3afb60bb290fc8d2dd0098b9911fcaa054"
				     "12b367055dee359757a9c736"),
	},
	{
		.name = "post-vanilla",
		.cred = &suite_cred,
		.t = SUITE_TIME,
		.method = "POST",
		.raw_path = "/",
		.headers = {HOST, DATE},
		.n_headers = 2,
		.body = "",
		.creq = "POST\n/\n\n"
			"host:example.amazonaws.com\n"
			"x-amz-date:20150830T123600Z\n\n"
			"host;x-amz-date\n" EMPTY_HASH,
		.sts = SUITE_STS("553f88c9e4d10fc9e109e2aeb65f030801b70c2f6468"
				 "faca261d401ae622fc87"),
		.authz = SUITE_AUTHZ("host;x-amz-date",
				     "5da7c1a2acd57cee7505fc6676e4e544621c3086"
				     "2966e37dddb68e92efbe5d6b"),
	},
	{
		.name = "post-header-key-sort",
		.cred = &suite_cred,
		.t = SUITE_TIME,
		.method = "POST",
		.raw_path = "/",
		.headers = {HOST, {"My-Header1", "value1"}, DATE},
		.n_headers = 3,
		.body = "",
		.creq = "POST\n/\n\n"
			"host:example.amazonaws.com\n"
			"my-header1:value1\n"
			"x-amz-date:20150830T123600Z\n\n"
			"host;my-header1;x-amz-date\n" EMPTY_HASH,
		.sts = SUITE_STS("9368318c2967cf6de74404b30c65a91e8f6253e0a865"
				 "9d6d5319f1a812f87d65"),
		.authz = SUITE_AUTHZ("host;my-header1;x-amz-date",
				     "c5410059b04c1ee005303aed430f6e6645f61f4d"
				     "c9e1461ec8f8916fdf18852c"),
	},
	{
		.name = "post-header-value-case",
		.cred = &suite_cred,
		.t = SUITE_TIME,
		.method = "POST",
		.raw_path = "/",
		.headers = {HOST, {"My-Header1", "VALUE1"}, DATE},
		.n_headers = 3,
		.body = "",
		.creq = "POST\n/\n\n"
			"host:example.amazonaws.com\n"
			"my-header1:VALUE1\n"
			"x-amz-date:20150830T123600Z\n\n"
			"host;my-header1;x-amz-date\n" EMPTY_HASH,
		.sts = SUITE_STS("d51ced243e649e3de6ef63afbbdcbca03131a21a7103"
				 "a1583706a64618606a93"),
		.authz = SUITE_AUTHZ("host;my-header1;x-amz-date",
				     "cdbc9802e29d2942e5e10b5bccfdd67c5f22c7c4"
				     "e8ae67b53629efa58b974b7d"),
	},
	{
		.name = "post-vanilla-query",
		.cred = &suite_cred,
		.t = SUITE_TIME,
		.method = "POST",
		.raw_path = "/",
		.query = {{"Param1", "value1"}},
		.n_query = 1,
		.headers = {HOST, DATE},
		.n_headers = 2,
		.body = "",
		.creq = "POST\n/\nParam1=value1\n"
			"host:example.amazonaws.com\n"
			"x-amz-date:20150830T123600Z\n\n"
			"host;x-amz-date\n" EMPTY_HASH,
		.sts = SUITE_STS("9d659678c1756bb3113e2ce898845a0a79dbbc57b740"
				 "555917687f1b3340fbbd"),
		.authz = SUITE_AUTHZ("host;x-amz-date",
				     "28038455d6de14eafc1f9222cf5aa6f1a96197d7"
				     "deb8263271d420d138af7f11"),
	},
	{
		/* The .req also carries "Content-Length:13", which the
		 * published .creq, .sts and .authz do not sign: only the
		 * signed headers are passed. */
		.name = "post-x-www-form-urlencoded",
		.cred = &suite_cred,
		.t = SUITE_TIME,
		.method = "POST",
		.raw_path = "/",
		.headers = {{"Content-Type", "application/x-www-form-urlencoded"},
			    HOST,
			    DATE},
		.n_headers = 3,
		.body = "Param1=value1",
		.creq = "POST\n/\n\n"
			"content-type:application/x-www-form-urlencoded\n"
			"host:example.amazonaws.com\n"
			"x-amz-date:20150830T123600Z\n\n"
			"content-type;host;x-amz-date\n"
			"9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7"
			"b24d0b6e",
		.sts = SUITE_STS("42a5e5bb34198acb3e84da4f085bb7927f2bc277ca76"
				 "6e6d19c73c2154021281"),
		.authz = SUITE_AUTHZ("content-type;host;x-amz-date",
				     "ff11897932ad3f4e8b18135d722051e5ac45fc38"
				     "421b1da7b9d196a0fe09473a"),
	},
	{
		.name = "post-sts-header-before",
		.cred = &suite_cred,
		.t = SUITE_TIME,
		.method = "POST",
		.raw_path = "/",
		.headers = {HOST,
			    DATE,
			    {"X-Amz-Security-Token",
			     "AQoDYXdzEPT//////////"
			     "wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWs"
			     "KWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSE"
			     "I/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampK"
			     "sburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE"
			     "8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbq"
			     "BAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSI"
			     "lTJabIQwj2ICCR/oLxBA=="}},
		.n_headers = 3,
		.body = "",
		.creq = "POST\n/\n\n"
			"host:example.amazonaws.com\n"
			"x-amz-date:20150830T123600Z\n"
			"x-amz-security-token:AQoDYXdzEPT//////////"
			"wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWs"
			"KWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSE"
			"I/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampK"
			"sburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE"
			"8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbq"
			"BAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSI"
			"lTJabIQwj2ICCR/oLxBA==\n\n"
			"host;x-amz-date;x-amz-security-token\n" EMPTY_HASH,
		.sts = SUITE_STS("c237e1b440d4c63c32ca95b5b99481081cb7b13c7e40"
				 "434868e71567c1a882f6"),
		.authz = SUITE_AUTHZ("host;x-amz-date;x-amz-security-token",
				     "85d96828115b5dc0cfc3bd16ad9e210dd772bbeb"
				     "ba041836c64533a82be05ead"),
	},
	{
		/* S3 API reference, "Authenticating Requests: Using the
		 * Authorization Header", example GET Object. The page writes
		 * the header without a space after the commas; the canonical
		 * request, string to sign and signature are as published. */
		.name = "s3-get-object",
		.cred = &s3_cred,
		.t = S3_TIME,
		.method = "GET",
		.raw_path = "/test.txt",
		.headers = {{"Host", "examplebucket.s3.amazonaws.com"},
			    {"Range", "bytes=0-9"},
			    {"x-amz-content-sha256", EMPTY_HASH},
			    {"x-amz-date", "20130524T000000Z"}},
		.n_headers = 4,
		.body = "",
		.creq = "GET\n/test.txt\n\n"
			"host:examplebucket.s3.amazonaws.com\n"
			"range:bytes=0-9\n"
			"x-amz-content-sha256:" EMPTY_HASH "\n"
			"x-amz-date:20130524T000000Z\n\n"
			"host;range;x-amz-content-sha256;x-amz-date\n" EMPTY_HASH,
		.sts = "AWS4-HMAC-SHA256\n"
		       "20130524T000000Z\n"
		       "20130524/us-east-1/s3/aws4_request\n"
		       "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc4"
		       "3964946972",
		.authz = "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/"
			 "20130524/us-east-1/s3/aws4_request, "
			 "SignedHeaders=host;range;x-amz-content-sha256;"
			 "x-amz-date, "
			 "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170ab"
			 "a48dd91039c6036bdb41",
	},
};

/* clang-format on */

/* The signed-headers line of a canonical request: the one before last. */
static void expected_signed_headers(const char *creq, char *out, size_t size)
{
	const char *end = strrchr(creq, '\n'), *start = end;

	assert_non_null(end);
	while (start > creq && start[-1] != '\n')
		start--;
	assert_true((size_t)(end - start) < size);
	memcpy(out, start, (size_t)(end - start));
	out[end - start] = '\0';
}

static void build_request(const struct vector *v, struct sbuf *path,
			  char payload_hash[HASH_SHA256_HEX],
			  struct sigv4_request *req)
{
	assert_int_equal(sigv4_encode_path(path, v->raw_path), 0);
	sha256_hex(v->body, strlen(v->body), payload_hash);
	memset(req, 0, sizeof(*req));
	req->method = v->method;
	req->path = sbuf_str(path);
	req->query = v->n_query ? v->query : NULL;
	req->n_query = v->n_query;
	req->headers = v->headers;
	req->n_headers = v->n_headers;
	req->payload_hash = payload_hash;
}

static void test_vector(void **state)
{
	const struct vector *v = *state;
	struct sbuf path = SBUF_INIT, creq = SBUF_INIT, sh = SBUF_INIT;
	struct sbuf sts = SBUF_INIT, authz = SBUF_INIT;
	char payload_hash[HASH_SHA256_HEX], want_sh[128];
	struct sigv4_request req;

	build_request(v, &path, payload_hash, &req);

	assert_int_equal(sigv4_canonical_request(&creq, &sh, &req), 0);
	assert_string_equal(sbuf_str(&creq), v->creq);
	expected_signed_headers(v->creq, want_sh, sizeof(want_sh));
	assert_string_equal(sbuf_str(&sh), want_sh);

	assert_int_equal(sigv4_string_to_sign(&sts, sbuf_str(&creq), v->t,
					      v->cred->region,
					      v->cred->service),
			 0);
	assert_string_equal(sbuf_str(&sts), v->sts);

	assert_int_equal(sigv4_authorization(&authz, &req, v->cred, v->t), 0);
	assert_string_equal(sbuf_str(&authz), v->authz);

	sbuf_free(&authz);
	sbuf_free(&sts);
	sbuf_free(&sh);
	sbuf_free(&creq);
	sbuf_free(&path);
}

struct encode_case {
	const char *in;
	size_t len;
	int keep_slash;
	const char *out;
};

static void test_uri_encode(void **state)
{
	static const struct encode_case cases[] = {
	    {"", 0, 0, ""},
	    {" ", 1, 0, "%20"},
	    {"+", 1, 0, "%2B"},
	    {"%", 1, 0, "%25"},
	    {"*", 1, 0, "%2A"},
	    {"=&?#", 4, 0, "%3D%26%3F%23"},
	    {"~", 1, 0, "~"},
	    {UNRESERVED, sizeof(UNRESERVED) - 1, 0, UNRESERVED},
	    {"\xe1\x88\xb4", 3, 0, "%E1%88%B4"},
	    {"\xff\x7f\x01", 3, 0, "%FF%7F%01"},
	    {"a\0b", 3, 0, "a%00b"},
	    {"a/b", 3, 0, "a%2Fb"},
	    {"a/b", 3, 1, "a/b"},
	    {"a b/c+d", 7, 1, "a%20b/c%2Bd"},
	};
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_SIZE(cases); i++) {
		struct sbuf b = SBUF_INIT;

		assert_int_equal(sigv4_uri_encode(&b, cases[i].in, cases[i].len,
						  cases[i].keep_slash),
				 0);
		assert_string_equal(sbuf_str(&b), cases[i].out);
		sbuf_free(&b);
	}
}

static void test_uri_encode_appends(void **state)
{
	struct sbuf b = SBUF_INIT;

	(void)state;
	assert_int_equal(sbuf_adds(&b, "x="), 0);
	assert_int_equal(sigv4_uri_encode(&b, "a b", 3, 0), 0);
	assert_string_equal(sbuf_str(&b), "x=a%20b");
	assert_int_equal(sigv4_uri_encode(&b, NULL, 0, 0), 0);
	assert_int_equal(sigv4_uri_encode(&b, NULL, 1, 0), -EINVAL);
	assert_string_equal(sbuf_str(&b), "x=a%20b");
	sbuf_free(&b);
}

static void test_encode_path(void **state)
{
	static const struct {
		const char *in, *out;
	} cases[] = {
	    {"", ""},
	    {"/", "/"},
	    {"/bucket/key", "/bucket/key"},
	    {"/bucket/my key+1%.txt", "/bucket/my%20key%2B1%25.txt"},
	    {"/bucket/a//b/", "/bucket/a//b/"},
	    {"/bucket/./../x", "/bucket/./../x"}, /* S3: not normalised */
	    {"/bucket/\xc3\xa9t\xc3\xa9", "/bucket/%C3%A9t%C3%A9"},
	    {"/bucket/a?b#c=d&e", "/bucket/a%3Fb%23c%3Dd%26e"},
	    {"/bucket/~tilde", "/bucket/~tilde"},
	};
	size_t i;
	struct sbuf b = SBUF_INIT;

	(void)state;
	for (i = 0; i < ARRAY_SIZE(cases); i++) {
		sbuf_reset(&b);
		assert_int_equal(sigv4_encode_path(&b, cases[i].in), 0);
		assert_string_equal(sbuf_str(&b), cases[i].out);
	}
	assert_int_equal(sigv4_encode_path(&b, NULL), -EINVAL);
	sbuf_free(&b);
}

static void test_canonical_query(void **state)
{
	static const struct sigv4_kv q[] = {
	    {"prefix", "photos/2006/"}, /* '/' encoded in a value */
	    {"acl", ""},		/* "acl=" */
	    {"{", "x y"},		/* after "a" raw, first once "%7B" */
	    {"list-type", "2"},
	    {"a+b", "c=d"},
	};
	static const struct sigv4_kv bad[] = {{"acl", NULL}};
	struct sbuf b = SBUF_INIT;

	(void)state;
	assert_int_equal(sigv4_canonical_query(&b, q, ARRAY_SIZE(q)), 0);
	assert_string_equal(sbuf_str(&b),
			    "%7B=x%20y&a%2Bb=c%3Dd&acl=&"
			    "list-type=2&prefix=photos%2F2006%2F");
	sbuf_reset(&b);
	assert_int_equal(sigv4_canonical_query(&b, NULL, 0), 0);
	assert_string_equal(sbuf_str(&b), "");
	assert_int_equal(sbuf_adds(&b, "keep"), 0);
	assert_int_equal(sigv4_canonical_query(&b, bad, 1), -EINVAL);
	assert_int_equal(sigv4_canonical_query(&b, NULL, 1), -EINVAL);
	assert_string_equal(sbuf_str(&b), "keep");
	sbuf_free(&b);
}

static void test_amz_date(void **state)
{
	char d[17];

	(void)state;
	sigv4_amz_date(SUITE_TIME, d);
	assert_string_equal(d, "20150830T123600Z");
	sigv4_amz_date(S3_TIME, d);
	assert_string_equal(d, "20130524T000000Z");
	sigv4_amz_date(0, d);
	assert_string_equal(d, "19700101T000000Z");
	sigv4_amz_date((time_t)253402300799LL, d); /* last second of 9999 */
	assert_string_equal(d, "99991231T235959Z");
	sigv4_amz_date((time_t)253402300800LL, d);
	assert_string_equal(d, "00000000T000000Z");
}

static void test_signing_key(void **state)
{
	/* AWS General Reference, "Examples of how to derive a signing key
	 * for Signature Version 4": kSigning for 20120215/us-east-1/iam. */
	unsigned char key[32];
	char hex[65];

	(void)state;
	sigv4_signing_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
			  (time_t)1329264000, "us-east-1", "iam", key);
	hex_encode(key, sizeof(key), hex);
	assert_string_equal(hex, "f4780e2d9f65fa895f9c67b32ce1baf0"
				 "b0d8a43505a000a1a9e090d414db404d");
}

static void test_empty_path_is_slash(void **state)
{
	static const struct sigv4_kv h[] = {HOST, DATE};
	struct sigv4_request req = {
	    .method = "GET",
	    .path = "",
	    .headers = h,
	    .n_headers = ARRAY_SIZE(h),
	    .payload_hash = EMPTY_HASH,
	};
	struct sbuf creq = SBUF_INIT, sh = SBUF_INIT;

	(void)state;
	assert_int_equal(sigv4_canonical_request(&creq, &sh, &req), 0);
	assert_string_equal(sbuf_str(&creq), vectors[0].creq);
	sbuf_free(&creq);
	sbuf_free(&sh);
}

static void test_canonical_request_invalid(void **state)
{
	static const struct sigv4_kv ok[] = {HOST, DATE};
	static const struct sigv4_kv no_host[] = {DATE};
	static const struct sigv4_kv no_date[] = {HOST};
	static const struct sigv4_kv colon[] = {HOST, DATE, {"a:b", "c"}};
	static const struct sigv4_kv space[] = {HOST, DATE, {"a b", "c"}};
	static const struct sigv4_kv empty[] = {HOST, DATE, {"", "c"}};
	static const struct sigv4_kv null_val[] = {HOST, DATE, {"a", NULL}};
	static const struct {
		const struct sigv4_kv *h;
		size_t n;
		const char *method, *path;
	} cases[] = {
	    {no_host, 1, "GET", "/"},
	    {no_date, 1, "GET", "/"},
	    {colon, 3, "GET", "/"},
	    {space, 3, "GET", "/"},
	    {empty, 3, "GET", "/"},
	    {null_val, 3, "GET", "/"},
	    {NULL, 0, "GET", "/"},
	    {ok, 2, NULL, "/"},
	    {ok, 2, "", "/"},
	    {ok, 2, "G T", "/"},
	    {ok, 2, "GET", NULL},
	    {ok, 2, "GET", "/a b"},
	    {ok, 2, "GET", "/a?b=c"},
	    {ok, 2, "GET", "/a\nb"},
	    {ok, 2, "GET", "/\xe1\x88\xb4"}, /* not encoded */
	};
	struct sbuf creq = SBUF_INIT, sh = SBUF_INIT;
	size_t i;

	(void)state;
	assert_int_equal(sbuf_adds(&creq, "creq"), 0);
	assert_int_equal(sbuf_adds(&sh, "sh"), 0);
	for (i = 0; i < ARRAY_SIZE(cases); i++) {
		struct sigv4_request req = {
		    .method = cases[i].method,
		    .path = cases[i].path,
		    .headers = cases[i].h,
		    .n_headers = cases[i].n,
		    .payload_hash = EMPTY_HASH,
		};

		assert_int_equal(sigv4_canonical_request(&creq, &sh, &req),
				 -EINVAL);
		assert_string_equal(sbuf_str(&creq), "creq");
		assert_string_equal(sbuf_str(&sh), "sh");
	}
	assert_int_equal(sigv4_canonical_request(&creq, &sh, NULL), -EINVAL);
	sbuf_free(&creq);
	sbuf_free(&sh);
}

static void test_canonical_request_appends(void **state)
{
	static const struct sigv4_kv h[] = {HOST, DATE};
	struct sigv4_request req = {
	    .method = "GET",
	    .path = "/",
	    .headers = h,
	    .n_headers = ARRAY_SIZE(h),
	    .payload_hash = EMPTY_HASH,
	};
	struct sbuf creq = SBUF_INIT, sh = SBUF_INIT;

	(void)state;
	assert_int_equal(sbuf_adds(&creq, ">"), 0);
	assert_int_equal(sbuf_adds(&sh, ">"), 0);
	assert_int_equal(sigv4_canonical_request(&creq, &sh, &req), 0);
	assert_int_equal(creq.s[0], '>');
	assert_string_equal(creq.s + 1, vectors[0].creq);
	assert_string_equal(sbuf_str(&sh), ">host;x-amz-date");
	sbuf_free(&creq);
	sbuf_free(&sh);
}

static void test_authorization_invalid(void **state)
{
	static const struct sigv4_kv h[] = {HOST, DATE};
	static const struct sigv4_kv h_stale[] = {
	    HOST, {"X-Amz-Date", "20150830T123500Z"}};
	static const struct sigv4_kv h_padded[] = {
	    HOST, {"x-amz-date", "  20150830T123600Z "}};
	struct sigv4_request req = {
	    .method = "GET",
	    .path = "/",
	    .headers = h,
	    .n_headers = ARRAY_SIZE(h),
	    .payload_hash = EMPTY_HASH,
	};
	char long_secret[300];
	struct sigv4_credentials c;
	struct sbuf b = SBUF_INIT;

	(void)state;
	assert_int_equal(sbuf_adds(&b, "keep"), 0);

	c = suite_cred;
	c.region = "us-east-1/x";
	assert_int_equal(sigv4_authorization(&b, &req, &c, SUITE_TIME),
			 -EINVAL);
	c = suite_cred;
	c.access_key_id = "AKID,EXAMPLE";
	assert_int_equal(sigv4_authorization(&b, &req, &c, SUITE_TIME),
			 -EINVAL);
	c = suite_cred;
	c.access_key_id = "AKID/EXAMPLE";
	assert_int_equal(sigv4_authorization(&b, &req, &c, SUITE_TIME),
			 -EINVAL);
	/* Swift's tempauth keys are "account:user": a valid key id. */
	{
		struct sbuf ok = SBUF_INIT;

		c = suite_cred;
		c.access_key_id = "test:tester";
		assert_int_equal(sigv4_authorization(&ok, &req, &c,
						     SUITE_TIME), 0);
		assert_non_null(strstr(sbuf_str(&ok),
				       "Credential=test:tester/20150830/"));
		sbuf_free(&ok);
	}
	c = suite_cred;
	c.service = "";
	assert_int_equal(sigv4_authorization(&b, &req, &c, SUITE_TIME),
			 -EINVAL);
	c = suite_cred;
	c.secret_access_key = NULL;
	assert_int_equal(sigv4_authorization(&b, &req, &c, SUITE_TIME),
			 -EINVAL);
	memset(long_secret, 'k', sizeof(long_secret) - 1);
	long_secret[sizeof(long_secret) - 1] = '\0';
	c = suite_cred;
	c.secret_access_key = long_secret;
	assert_int_equal(sigv4_authorization(&b, &req, &c, SUITE_TIME),
			 -EINVAL);
	assert_int_equal(sigv4_authorization(&b, &req, NULL, SUITE_TIME),
			 -EINVAL);

	/* The X-Amz-Date header must carry the signing time. */
	req.headers = h_stale;
	assert_int_equal(sigv4_authorization(&b, &req, &suite_cred, SUITE_TIME),
			 -EINVAL);
	assert_string_equal(sbuf_str(&b), "keep");

	/* ... whitespace aside, as in the canonical form. */
	req.headers = h_padded;
	assert_int_equal(sigv4_authorization(&b, &req, &suite_cred, SUITE_TIME),
			 0);
	assert_string_equal(sbuf_str(&b),
			    "keep" SUITE_AUTHZ("host;x-amz-date",
					       "5fa00fa31553b73ebf1942676e86"
					       "291e8372ff2a2260956d9b8aae1d"
					       "763fbf31"));
	sbuf_free(&b);
}

static void test_string_to_sign_invalid(void **state)
{
	struct sbuf b = SBUF_INIT;

	(void)state;
	assert_int_equal(
	    sigv4_string_to_sign(&b, NULL, SUITE_TIME, "us-east-1", "s3"),
	    -EINVAL);
	assert_int_equal(sigv4_string_to_sign(&b, "x", SUITE_TIME, NULL, "s3"),
			 -EINVAL);
	assert_int_equal(
	    sigv4_string_to_sign(&b, "x", SUITE_TIME, "us-east-1", "s/3"),
	    -EINVAL);
	assert_string_equal(sbuf_str(&b), "");
	sbuf_free(&b);
}

static const struct CMUnitTest unit_tests[] = {
    cmocka_unit_test(test_uri_encode),
    cmocka_unit_test(test_uri_encode_appends),
    cmocka_unit_test(test_encode_path),
    cmocka_unit_test(test_canonical_query),
    cmocka_unit_test(test_amz_date),
    cmocka_unit_test(test_signing_key),
    cmocka_unit_test(test_empty_path_is_slash),
    cmocka_unit_test(test_canonical_request_invalid),
    cmocka_unit_test(test_canonical_request_appends),
    cmocka_unit_test(test_authorization_invalid),
    cmocka_unit_test(test_string_to_sign_invalid),
};

int main(void)
{
	struct CMUnitTest tests[ARRAY_SIZE(unit_tests) + ARRAY_SIZE(vectors)];
	size_t i, n = 0;

	for (i = 0; i < ARRAY_SIZE(unit_tests); i++)
		tests[n++] = unit_tests[i];
	/* One named test per vector, so a failure names the vector. */
	for (i = 0; i < ARRAY_SIZE(vectors); i++) {
		tests[n] = (struct CMUnitTest){
		    .name = vectors[i].name,
		    .test_func = test_vector,
		    .initial_state = (void *)&vectors[i],
		};
		n++;
	}
	return cmocka_run_group_tests_name("sigv4", tests, NULL, NULL);
}
