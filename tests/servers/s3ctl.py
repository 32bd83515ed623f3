#!/usr/bin/python3
"""Tiny S3 admin helper for the test servers (boto3, path-style, SigV4).

usage: s3ctl.py --endpoint URL --key K --secret S COMMAND ARGS
  mkbucket B...   create buckets (existing ones are fine)
  empty B...      delete every object (and pending multipart upload) in the buckets
  ls B            list keys
  ping            list buckets (exit 0 when the server answers correctly)
"""
import argparse
import os
import sys

for v in ("AWS_CA_BUNDLE", "CURL_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "AWS_PROFILE"):
    os.environ.pop(v, None)

import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402


def client(endpoint, key, secret, region="us-east-1"):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name=region,
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            connect_timeout=5,
            read_timeout=30,
            retries={"max_attempts": 2, "mode": "standard"},
        ),
    )


def mkbucket(s3, names):
    for b in names:
        try:
            s3.create_bucket(Bucket=b)
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise
        s3.head_bucket(Bucket=b)


def empty(s3, names):
    for b in names:
        try:
            ups = s3.list_multipart_uploads(Bucket=b).get("Uploads", [])
            for u in ups:
                s3.abort_multipart_upload(Bucket=b, Key=u["Key"], UploadId=u["UploadId"])
        except ClientError:
            pass  # not every test server implements it
        while True:
            keys = [o["Key"] for o in s3.list_objects_v2(Bucket=b).get("Contents", [])]
            if not keys:
                break
            for k in keys:
                s3.delete_object(Bucket=b, Key=k)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--secret", required=True)
    ap.add_argument("--region", default="us-east-1")
    ap.add_argument("cmd", choices=["mkbucket", "empty", "ls", "ping"])
    ap.add_argument("args", nargs="*")
    a = ap.parse_args()
    s3 = client(a.endpoint, a.key, a.secret, a.region)
    if a.cmd == "mkbucket":
        mkbucket(s3, a.args)
    elif a.cmd == "empty":
        empty(s3, a.args)
    elif a.cmd == "ls":
        for b in a.args:
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=b):
                for o in page.get("Contents", []):
                    print(f"{o['Size']}\t{o['Key']}")
    elif a.cmd == "ping":
        s3.list_buckets()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # one clear line instead of a traceback
        print(f"s3ctl: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
