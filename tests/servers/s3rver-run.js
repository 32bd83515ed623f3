#!/usr/bin/env node
// Runs the repository's s3rver (node_modules/s3rver, pinned in package.json) with four fixes.
// 1. s3rver stores an object as the file "<last key component>._S3rver_object" (and
// "._S3rver_metadata.json"), so a key component of more than ~232 bytes overflows NAME_MAX
// (255) and crashes the whole server with ENAMETOOLONG. Real S3 takes any component up to the
// 1024-byte key limit. Here every key component longer than 200 bytes is stored split into
// 200-byte directory levels joined by the marker "&/" ('&' itself is escaped as "&26"), which
// is reversible and keeps the listing order for all keys that do not hit the split.
// Arguments are s3rver's own (see s3rver --help).
'use strict';

const path = require('path');

const crypto = require('crypto');

const root = path.resolve(__dirname, '..', '..');
const s3rverDir = path.join(root, 'node_modules', 's3rver');
const FilesystemStore = require(path.join(s3rverDir, 'lib', 'stores', 'filesystem'));

const CHUNK = 200; // bytes per stored path component (+ the 23-byte s3rver suffix < 255)

function splitComponent(comp) {
  if (Buffer.byteLength(comp) <= CHUNK) return comp;
  const out = [];
  let cur = '';
  let curBytes = 0;
  for (const ch of comp) { // by code point: never split a UTF-8 sequence
    const n = Buffer.byteLength(ch);
    if (curBytes + n > CHUNK) {
      out.push(cur);
      cur = '';
      curBytes = 0;
    }
    cur += ch;
    curBytes += n;
  }
  out.push(cur);
  return out.join('&/');
}

FilesystemStore.encodeKeyPath = function encodeKeyPath(key) {
  return key
    .replace(/&/g, '&26')
    .split('/')
    .map(splitComponent)
    .join('/');
};

FilesystemStore.decodeKeyPath = function decodeKeyPath(keyPath) {
  return keyPath.replace(/&\//g, '').replace(/&26/g, '&');
};

// 2. ListObjectsV2 continuation tokens: s3rver encrypts them with DES, which OpenSSL 3 (Node >= 17,
// Debian 12's node 18) no longer offers: every truncated listing failed with InternalError.
// The token only has to be opaque to clients; an identity "cipher" keeps s3rver's token layout.
const identityCipher = () => ({
  update: (data, enc) => (Buffer.isBuffer(data) ? data : Buffer.from(data, enc)),
  final: () => Buffer.alloc(0),
});
for (const fn of ['createCipheriv', 'createDecipheriv']) {
  const orig = crypto[fn];
  crypto[fn] = function patched(algorithm, ...rest) {
    return algorithm === 'des' ? identityCipher() : orig.call(this, algorithm, ...rest);
  };
}

// 3. Listing, rewritten for two reasons: the stock walk prunes the split directories when a
// delimiter is given (hiding such keys), and it returns keys in directory-walk order, where S3
// returns them in UTF-8 byte order ("a", "a-b", "a/b"; s3rver gave "a/b" first), which
// matters for paginated listings (continuation tokens resume after the last key).
// As in stock s3rver, max-keys counts objects; common prefixes come with the page they sort in.
const S3Object = require(path.join(s3rverDir, 'lib', 'models', 'object'));
const { walk } = require(path.join(s3rverDir, 'lib', 'utils'));
const OBJECT_SUFFIX = '._S3rver_object';
const byteCmp = (a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b));

FilesystemStore.prototype.listObjects = async function listObjects(bucket, options) {
  const { delimiter = '', startAfter = '', prefix = '', maxKeys = Infinity } = options;
  const bucketPath = this.getBucketPath(bucket);
  const prefixPath = [bucketPath, FilesystemStore.encodeKeyPath(prefix)].join('/');
  const it = walk(
    bucketPath,
    dirPath => dirPath.startsWith(prefixPath) || prefixPath.startsWith(dirPath + '/'),
  );
  const keys = [];
  const prefixes = new Set();
  for (const keyPath of it) {
    if (!keyPath.endsWith(OBJECT_SUFFIX)) continue;
    const key = FilesystemStore.decodeKeyPath(
      keyPath.slice(bucketPath.length + 1, -OBJECT_SUFFIX.length),
    );
    if (!key.startsWith(prefix)) continue;
    if (delimiter) {
      const idx = key.slice(prefix.length).indexOf(delimiter);
      if (idx !== -1) {
        prefixes.add(key.slice(0, prefix.length + idx + delimiter.length));
        continue;
      }
    }
    keys.push(key);
  }
  keys.sort(byteCmp);
  const after = keys.filter(k => byteCmp(k, startAfter) > 0);
  const page = after.slice(0, Math.max(0, maxKeys));
  const isTruncated = after.length > page.length && page.length > 0;
  const last = isTruncated ? page[page.length - 1] : null;
  const commonPrefixes = [...prefixes]
    .filter(p => byteCmp(p, startAfter) > 0 && (last === null || byteCmp(p, last) < 0))
    .sort(byteCmp);
  const metadataArr = await Promise.all(
    page.map(key =>
      this.getMetadata(bucket, key).catch(err => {
        if (err.code === 'ENOENT') return undefined;
        throw err;
      }),
    ),
  );
  const objects = [];
  page.forEach((key, i) => {
    if (metadataArr[i] !== undefined) objects.push(new S3Object(bucket, key, null, metadataArr[i]));
  });
  return { objects, commonPrefixes, isTruncated };
};

// 4. Atomic objects. Stock s3rver writes an object's content, its "object.md5" and its
// "metadata.json" in place, one after the other, and answers the PUT before the content is
// flushed; a HEAD that finds no md5 file computes one from the content as it is and WRITES it.
// A HEAD (a lookup) during a PUT of a new key could so store the md5 of a partial file after
// the PUT's own: the object kept a wrong ETag for good, and a mount's check after its PUT took
// its own upload for another's (CI, stop 36: a 'superseded' row and then a 'foreign' one for
// one write). Here the content goes to a temporary file in the same directory (not listed:
// it lacks the object suffix), md5 and metadata are written to temporary files and renamed,
// and the content is renamed into place last: a reader sees the whole old object or the whole
// new one, with its own md5 (for an overwrite, the new md5/metadata may show with the old
// content for the instant between the renames). A missing md5 is computed, never written.
const fsp = require('fs').promises;
const fsn = require('fs');

const tmpName = file => `${file}.${process.pid}.${crypto.randomBytes(6).toString('hex')}.tmp`;

async function writeAtomic(file, data) {
  const tmp = tmpName(file);
  await fsp.writeFile(tmp, data);
  await fsp.rename(tmp, file);
}

function md5OfFile(file) {
  return new Promise((resolve, reject) => {
    const h = crypto.createHash('md5');
    fsn.createReadStream(file)
      .on('error', reject)
      .on('data', c => h.update(c))
      .on('end', () => resolve(h.digest('hex')));
  });
}

const keptMetadata = metadata => {
  const json = {};
  for (const [k, v] of Object.entries(metadata || {})) {
    if (S3Object.ALLOWED_METADATA.includes(k) || k.startsWith('x-amz-meta-')) json[k] = v;
  }
  return json;
};

FilesystemStore.prototype.getMetadata = async function getMetadata(bucket, key) {
  const objectPath = this.getResourcePath(bucket, key, 'object');
  const stat = await fsp.stat(objectPath); // throws ENOENT: no such object
  const [storedMetadata, md5] = await Promise.all([
    fsp.readFile(this.getResourcePath(bucket, key, 'metadata.json')).then(JSON.parse)
      .catch(err => { if (err.code === 'ENOENT') return undefined; throw err; }),
    fsp.readFile(`${objectPath}.md5`).then(b => b.toString())
      .catch(err => { if (err.code === 'ENOENT') return md5OfFile(objectPath); throw err; }),
  ]);
  return {
    ...storedMetadata,
    etag: JSON.stringify(md5),
    'last-modified': stat.mtime.toUTCString(),
    'content-length': stat.size,
  };
};

FilesystemStore.prototype.putMetadata = async function putMetadata(bucket, key, metadata, md5) {
  if (md5) await writeAtomic(this.getResourcePath(bucket, key, 'object.md5'), md5);
  await writeAtomic(this.getResourcePath(bucket, key, 'metadata.json'),
    JSON.stringify(keptMetadata(metadata), null, 2));
};

FilesystemStore.prototype.putObject = async function putObject(object) {
  const objectPath = this.getResourcePath(object.bucket, object.key, 'object');
  await fsp.mkdir(path.dirname(objectPath), { recursive: true });
  const tmp = tmpName(objectPath);
  let size = 0;
  const h = crypto.createHash('md5');
  try {
    await new Promise((resolve, reject) => {
      const ws = fsn.createWriteStream(tmp).on('error', reject).on('close', resolve);
      if (Buffer.isBuffer(object.content)) {
        h.update(object.content);
        size = object.content.length;
        ws.end(object.content);
      } else {
        object.content.on('error', err => { ws.destroy(); reject(err); });
        object.content.on('data', c => { h.update(c); size += c.length; });
        object.content.pipe(ws);
      }
    });
    const md5 = h.digest('hex');
    await this.putMetadata(object.bucket, object.key, object.metadata, md5);
    await fsp.rename(tmp, objectPath);
    return { size, md5 };
  } catch (err) {
    await fsp.unlink(tmp).catch(() => {});
    throw err;
  }
};

FilesystemStore.prototype.copyObject = async function copyObject(srcBucket, srcKey, destBucket,
  destKey, replacementMetadata) {
  const srcPath = this.getResourcePath(srcBucket, srcKey, 'object');
  const destPath = this.getResourcePath(destBucket, destKey, 'object');
  if (srcPath !== destPath) {
    await fsp.mkdir(path.dirname(destPath), { recursive: true });
    const tmp = tmpName(destPath);
    try {
      await fsp.copyFile(srcPath, tmp);
      const md5 = await md5OfFile(tmp);
      const meta = replacementMetadata ||
        await fsp.readFile(this.getResourcePath(srcBucket, srcKey, 'metadata.json'))
          .then(JSON.parse).catch(err => { if (err.code === 'ENOENT') return {}; throw err; });
      await this.putMetadata(destBucket, destKey, meta, md5);
      await fsp.rename(tmp, destPath);
    } catch (err) {
      await fsp.unlink(tmp).catch(() => {});
      throw err;
    }
  } else if (replacementMetadata) {
    await this.putMetadata(destBucket, destKey, replacementMetadata);
  }
  return this.getMetadata(destBucket, destKey);
};

require(path.join(s3rverDir, 'bin', 's3rver.js'));
