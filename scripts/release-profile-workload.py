#!/usr/bin/env python3
"""The profile run's workload (scripts/release-build): what a registry does
most, once each, on loopback: the API check, a token, an image pushed (a
layer, its config, the manifest), its conversion to ext4 awaited, the image
pulled anonymously.

    release-profile-workload.py HOST:PORT
"""

import base64
import gzip
import hashlib
import io
import json
import sys
import tarfile
import time
import urllib.error
import urllib.request

REPO, USER, PASSWORD = "profile/pub", "profile", "profile-password"


def request(method, url, body=None, headers=None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def expect(status, wanted, what):
    if status != wanted:
        raise SystemExit(f"release-profile-workload: {what}: HTTP {status}, wanted {wanted}")


def main():
    base = f"http://{sys.argv[1]}"
    basic = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    status, _, _ = request("GET", f"{base}/v2/")
    expect(status, 401, "GET /v2/ without credentials")
    status, _, body = request(
        "GET",
        f"{base}/token?service=kiln&scope=repository:{REPO}:push,pull",
        headers={"Authorization": f"Basic {basic}"},
    )
    expect(status, 200, "token")
    auth = {"Authorization": "Bearer " + json.loads(body)["token"]}

    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w") as tar:
        data = b"hello from the profile run\n"
        info = tarfile.TarInfo("etc/hello")
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
    layer = gzip.compress(tar_bytes.getvalue(), mtime=0)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {
                "type": "layers",
                "diff_ids": ["sha256:" + hashlib.sha256(tar_bytes.getvalue()).hexdigest()],
            },
        }
    ).encode()

    def push_blob(blob):
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        status, headers, _ = request("POST", f"{base}/v2/{REPO}/blobs/uploads/", headers=auth)
        expect(status, 202, "start upload")
        location = headers["Location"]
        if location.startswith("/"):
            location = base + location
        sep = "&" if "?" in location else "?"
        status, _, _ = request(
            "PUT",
            f"{location}{sep}digest={digest}",
            body=blob,
            headers={**auth, "Content-Type": "application/octet-stream"},
        )
        expect(status, 201, "finish upload")
        return digest, len(blob)

    (layer_digest, layer_size), (config_digest, config_size) = push_blob(layer), push_blob(config)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config_size,
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer_digest,
                    "size": layer_size,
                }
            ],
        }
    ).encode()
    manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    status, _, _ = request(
        "PUT",
        f"{base}/v2/{REPO}/manifests/v1",
        body=manifest,
        headers={**auth, "Content-Type": "application/vnd.oci.image.manifest.v1+json"},
    )
    expect(status, 201, "push manifest")

    state = None
    for _ in range(600):  # the conversion, at most a minute
        status, _, body = request("GET", f"{base}/kiln/v1/images/{manifest_digest}", headers=auth)
        state = json.loads(body).get("state") if status == 200 else None
        if state not in (None, "pending", "converting"):
            break
        time.sleep(0.1)
    if state != "ready":
        raise SystemExit(f"release-profile-workload: conversion ended {state}, wanted ready")

    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
    expect(request("GET", f"{base}/v2/{REPO}/manifests/v1", headers=accept)[0], 200, "pull")
    for digest in (config_digest, layer_digest):
        expect(request("GET", f"{base}/v2/{REPO}/blobs/{digest}")[0], 200, "pull blob")


if __name__ == "__main__":
    main()
