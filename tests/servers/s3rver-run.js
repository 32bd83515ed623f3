#!/usr/bin/env node
// Runs the repository's s3rver (node_modules/s3rver, pinned in package.json) with three fixes.
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

require(path.join(s3rverDir, 'bin', 's3rver.js'));
