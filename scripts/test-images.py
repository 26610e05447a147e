#!/usr/bin/env python3
"""Helpers for scripts/test-images (Python standard library only).

Subcommands: mirror | write PATH OFFSET N SEED | many-files ROOT |
layer-d OUT.tar | extras LAYOUT | index LAYOUT NAME TAG... | summary LAYOUT.  Everything is deterministic
(seeded pseudo-random data, fixed mtimes and creation times).
"""
import glob, gzip, hashlib, io, json, os, random, re, subprocess, sys, tarfile

EPOCH = 1700000000
CREATED = "2023-11-14T22:13:20Z"  # = EPOCH
REF = "org.opencontainers.image.ref.name"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
TAR = "application/vnd.oci.image.layer.v1.tar"
D, F, HARD, SYM = tarfile.DIRTYPE, tarfile.REGTYPE, tarfile.LNKTYPE, tarfile.SYMTYPE


def rand(n, seed):
    return random.Random(seed).randbytes(n)


def mirror():
    """The Debian mirror this host's apt uses for bookworm (or the host's own release)."""
    codename = re.search(r"^VERSION_CODENAME=(\S+)", open("/etc/os-release").read(), re.M)
    suites = {"bookworm", codename.group(1) if codename else "bookworm"}
    uris = []
    for path in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")):
        for line in open(path).read().splitlines() if os.path.exists(path) else []:
            words = re.sub(r"\[[^]]*\]", "", line.split("#")[0]).split()  # drop [options]
            if len(words) >= 3 and words[0] == "deb" and words[2] in suites:
                uris.append(words[1])
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        for stanza in re.split(r"\n\s*\n", open(path).read()):
            fields = dict((k.strip().lower(), v.split()) for k, _, v in
                          (l.partition(":") for l in stanza.splitlines() if l[:1].isalpha()))
            if ("deb" in fields.get("types", []) and suites & set(fields.get("suites", []))
                    and fields.get("enabled", ["yes"]) != ["no"]):
                uris += fields.get("uris", [])
    http = [u.rstrip("/") for u in uris if u.startswith(("http://", "https://"))]
    print(http[0] if http else "http://deb.debian.org/debian")


def write(path, offset, n, seed):
    """Writes N seeded pseudo-random bytes at OFFSET of PATH (created if missing)."""
    with open(path, "r+b" if os.path.exists(path) else "wb") as f:
        f.seek(int(offset))
        f.write(rand(int(n), int(seed)))


def many_files(root):
    """300 dirs x 330 files plus one dir of 20000 entries, 0-2000 seeded bytes each."""
    rng = random.Random(7)
    dirs = [(f"files/dir{i:03d}", 330, "file{:03d}") for i in range(300)] + [("wide", 20000, "entry{:05d}")]
    for d, count, pattern in dirs:
        os.makedirs(os.path.join(root, d))
        for j in range(count):
            with open(os.path.join(root, d, pattern.format(j)), "wb") as f:
                f.write(rng.randbytes(rng.randint(0, 2000)))


def tar_bytes(entries):
    """An uncompressed PAX tar; entries are (name, type[, data or link target[, mode]])."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, *rest in entries:
            ti = tarfile.TarInfo(name)
            ti.type, ti.mtime = kind, EPOCH
            ti.mode = rest[1] if len(rest) > 1 else (0o755 if kind == D else 0o644)
            data = rest[0] if rest and kind == F else b""
            if kind in (HARD, SYM):
                ti.linkname = rest[0]
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data) if kind == F else None)
    return buf.getvalue()


def layer_d(out):
    """The hand-crafted top layer of `layers`: whiteouts and type replacements that
    umoci repack never writes.  Every parent directory has its own entry (with the
    same mode/owner/mtime as below) so umoci never invents one with the current time."""
    with open(out, "wb") as f:
        f.write(tar_bytes([
            ("etc", D), ("etc/apt", D),
            ("etc/apt/.wh..wh..opq", F),  # opaque: hides all lower content of /etc/apt...
            ("etc/apt/sources.list", F, b"deb http://deb.debian.org/debian bookworm main\n"),  # ...but not this
            ("etc/.wh.issue.net", F),  # plain whiteout of a lower file
            ("opt", D),
            ("opt/.wh.gone", F),  # whiteout of a lower directory with children
            ("opt/links", D),
            ("opt/links/.wh.b", F),  # removes one name of a hardlinked file; a and c stay
            ("opt/x", F, b"this file replaces the directory /opt/x\n"),  # dir -> file
            ("opt/y", D), ("opt/y/child", F, b"/opt/y was a file below\n"),  # file -> dir
            ("opt/dup", F, b"first entry, must lose\n", 0o600),  # same path twice:
            ("opt/dup", F, b"second entry wins\n", 0o640),  # the last one wins
            ("usr", D), ("usr/local", D), ("usr/local/bin", D),  # a hardlink to a file that
            ("usr/local/bin/dash-lower-hardlink", HARD, "usr/bin/dash"),  # only lower layers have
        ]))


class Layout:
    def __init__(self, path):
        self.path = path

    def blob(self, media_type, data, **extra):
        digest = hashlib.sha256(data).hexdigest()
        with open(f"{self.path}/blobs/sha256/{digest}", "wb") as f:
            f.write(data)
        return {"mediaType": media_type, "digest": "sha256:" + digest, "size": len(data), **extra}

    def json_blob(self, media_type, obj, **extra):
        return self.blob(media_type, json.dumps(obj, sort_keys=True).encode(), **extra)

    def image(self, layers, arch="amd64", variant=None):
        """A manifest for layers [(media_type, uncompressed tar, compressor)]."""
        platform = {"architecture": arch, "os": "linux", **({"variant": variant} if variant else {})}
        config = {**platform, "created": CREATED, "config": {"Cmd": ["/bin/sh"]},
                  "rootfs": {"type": "layers",
                             "diff_ids": ["sha256:" + hashlib.sha256(t).hexdigest() for _, t, _ in layers]},
                  "history": [{"created": CREATED, "created_by": f"ext4-test-images layer {i} ({mt})"}
                              for i, (mt, _, _) in enumerate(layers)]}
        return self.json_blob(MANIFEST, {
            "schemaVersion": 2, "mediaType": MANIFEST, "config": self.json_blob(CONFIG, config),
            "layers": [self.blob(mt, compress(t)) for mt, t, compress in layers]}, platform=platform)


def gz(data):
    return gzip.compress(data, mtime=0)


def zstd(data):
    return subprocess.run(["zstd", "-q", "-c", "-19"], input=data, check=True, stdout=subprocess.PIPE).stdout


def extras(path):
    """Images umoci 0.4.7 cannot write: zstd layers, a BuildKit cache manifest,
    an artifact, and a multi-platform index; all tagged in index.json."""
    lay, tags = Layout(path), {}
    small = tar_bytes([("app", D), ("app/data", D), ("app/hello.txt", F, b"hello from a zstd layer\n"),
                       ("app/data/blob.bin", F, rand(100_000, 5)), ("app/data/empty", F),
                       ("app/hard", HARD, "app/hello.txt"), ("app/link", SYM, "hello.txt"),
                       ("app/dirlink", SYM, "data"), ("etc", D), ("etc/release", F, b"kiln zstd test\n", 0o600)])
    upper = tar_bytes([("app", D), ("app/second.txt", F, b"from an uncompressed layer\n"),
                       ("app/data", D), ("app/data/.wh.empty", F)])
    tags["zstd"] = lay.image([(TAR + "+zstd", small, zstd), (TAR, upper, lambda t: t)])
    # The same two tars gzip-compressed (same diff_ids): umoci 0.4.7 cannot
    # unpack zstd, so this twin is the oracle for the zstd image.
    tags["zstd-gzip-twin"] = lay.image([(TAR + "+gzip", small, gz), (TAR + "+gzip", upper, gz)])

    cache_layer = tar_bytes([("cache", D), ("cache/result", F, b"cached build step output\n")])
    layer = lay.blob(TAR + "+gzip", gz(cache_layer), annotations={
        "buildkit/createdat": CREATED,
        "containerd.io/uncompressed": "sha256:" + hashlib.sha256(cache_layer).hexdigest()})
    cache_config = {"layers": [{"blob": layer["digest"], "parent": -1}],
                    "records": [{"digest": "sha256:" + hashlib.sha256(b"kiln cache key").hexdigest(),
                                 "results": [{"layer": 0, "createdAt": CREATED}]}]}
    tags["buildkit-cache"] = lay.json_blob(MANIFEST, {
        "schemaVersion": 2, "mediaType": MANIFEST, "layers": [layer],
        "config": lay.json_blob("application/vnd.buildkit.cacheconfig.v0", cache_config)})

    sbom = {"spdxVersion": "SPDX-2.3", "name": "kiln-test", "packages": []}
    tags["artifact"] = lay.json_blob(MANIFEST, {
        "schemaVersion": 2, "mediaType": MANIFEST, "artifactType": "application/vnd.example.sbom",
        "config": lay.blob("application/vnd.oci.empty.v1+json", b"{}"),
        "layers": [lay.json_blob("application/spdx+json", sbom)]}, artifactType="application/vnd.example.sbom")

    per_platform = [lay.image([(TAR + "+gzip", tar_bytes([("platform", F, f"linux/{arch}\n".encode())]), gz)],
                              arch, variant) for arch, variant in (("amd64", None), ("arm64", "v8"))]
    tags["multi"] = lay.json_blob(INDEX, {"schemaVersion": 2, "mediaType": INDEX, "manifests": per_platform})

    set_tags(path, tags)


def set_tags(path, tags):
    """Points each tag name of index.json at its descriptor."""
    index = json.load(open(f"{path}/index.json"))
    for name, desc in tags.items():
        desc.pop("platform", None)
        index["manifests"] = [m for m in index.get("manifests") or [] if m.get("annotations", {}).get(REF) != name]
        index["manifests"].append({**desc, "annotations": {REF: name}})
    with open(f"{path}/index.json.new", "w") as f:
        json.dump(index, f, indent=1)
    os.rename(f"{path}/index.json.new", f"{path}/index.json")


def index(path, name, *tags):
    """Tags NAME as an index of the image manifests tagged TAGS (platforms from their configs)."""
    lay, by_tag = Layout(path), {}
    for desc in json.load(open(f"{path}/index.json"))["manifests"]:
        by_tag[desc.get("annotations", {}).get(REF)] = desc
    children = []
    for tag in tags:
        desc = {k: v for k, v in by_tag[tag].items() if k != "annotations"}
        manifest = json.load(open(f"{path}/blobs/{desc['digest'].replace(':', '/')}"))
        config = json.load(open(f"{path}/blobs/{manifest['config']['digest'].replace(':', '/')}"))
        desc["platform"] = {k: config[k] for k in ("architecture", "os", "variant") if k in config}
        children.append(desc)
    set_tags(path, {name: lay.json_blob(INDEX, {"schemaVersion": 2, "mediaType": INDEX, "manifests": children})})


def summary(path):
    def load(desc):
        return json.load(open(f"{path}/blobs/{desc['digest'].replace(':', '/')}"))

    def describe(desc):
        layers = load(desc)["layers"]
        return f"{len(layers)} layer(s), {sum(l['size'] for l in layers):,} bytes compressed"

    for desc in json.load(open(f"{path}/index.json"))["manifests"]:
        tag = desc.get("annotations", {}).get(REF, "?")
        if desc.get("mediaType") == INDEX:
            parts = [f"{m['platform']['architecture']}: {describe(m)}" for m in load(desc)["manifests"]]
            print(f"{tag:15} {desc['digest']}  index of {len(parts)}: " + "; ".join(parts))
        else:
            print(f"{tag:15} {desc['digest']}  {describe(desc)}")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"mirror": mirror, "write": write, "many-files": many_files, "layer-d": layer_d,
     "extras": extras, "index": index, "summary": summary}[cmd](*args)
