//! The two-tier cache flows end to end, as the server and the builder use
//! them.

use kiln_cache_key::{
    Action, BuildId, CacheArgs, CacheOption, CachePlan, Client, Compression, CompressionType,
    Error, GlobalKey, Registry, Repository, RepositoryKind, TenantScope,
};

fn registry() -> Registry {
    "10.0.0.1:5000".parse().unwrap()
}

fn repos(names: &[&str]) -> Vec<Repository> {
    names.iter().map(|n| n.parse().unwrap()).collect()
}

#[test]
fn tenant_build_with_global_key() {
    let plan = CachePlan::tenant(
        registry(),
        " Acme ".parse().unwrap(),
        Some("NODE".parse().unwrap()),
    );
    assert_eq!(
        plan.buildctl_args(),
        [
            "--import-cache",
            "type=registry,ref=10.0.0.1:5000/cache/global/node",
            "--import-cache",
            "type=registry,ref=10.0.0.1:5000/cache/acme",
            "--export-cache",
            "type=registry,ref=10.0.0.1:5000/cache/acme,mode=max,image-manifest=true,oci-mediatypes=true,ignore-error=true",
        ]
    );
    assert_eq!(
        plan.buildx_args(),
        [
            "--cache-from",
            "type=registry,ref=10.0.0.1:5000/cache/global/node",
            "--cache-from",
            "type=registry,ref=10.0.0.1:5000/cache/acme",
            "--cache-to",
            "type=registry,ref=10.0.0.1:5000/cache/acme,mode=max,image-manifest=true,oci-mediatypes=true,ignore-error=true",
        ]
    );
}

#[test]
fn admin_build_writes_only_the_global_tier() {
    let plan = CachePlan::admin(registry(), Some("python".parse().unwrap())).unwrap();
    let export = plan.export();
    assert_eq!(export.get("ref"), Some("10.0.0.1:5000/cache/global/python"));
    assert_eq!(export.flag("ignore-error"), Some(false));
    let access = plan
        .access(
            &"b-1".parse().unwrap(),
            &repos(&["docker.io/library/python"]),
        )
        .unwrap();
    let scopes: Vec<String> = access.iter().map(ToString::to_string).collect();
    assert_eq!(
        scopes,
        [
            "repository:cache/global/python:pull,push",
            "repository:builds/b-1:pull,push",
            "repository:docker.io/library/python:pull",
        ]
    );
}

#[test]
fn tenants_can_never_push_the_global_cache() {
    // Whatever a tenant sends, the tenant constructor cannot produce a plan
    // or an access list that writes cache/global/...
    for (tenant, key) in [("acme", Some("node")), ("zeta", None), ("t-1", Some("t-1"))] {
        let plan = CachePlan::tenant(
            registry(),
            tenant.parse().unwrap(),
            key.map(|k| k.parse().unwrap()),
        );
        assert!(!plan.is_admin());
        let export_kind = registry().classify_path(&plan.export_repository());
        assert!(matches!(export_kind, RepositoryKind::TenantCache(_)));
        for a in plan.access(&"1".parse().unwrap(), &[]).unwrap() {
            if a.allows(Action::Push) {
                assert!(!matches!(
                    registry().classify_path(a.repository()),
                    RepositoryKind::GlobalCache(_)
                ));
            }
        }
    }
    // And no tenant can be called "global" to own cache/global.
    assert!("global".parse::<TenantScope>().is_err());
}

#[test]
fn admin_without_key_has_nowhere_to_export() {
    assert_eq!(
        CachePlan::admin(registry(), None).unwrap_err(),
        Error::AdminWithoutGlobalKey
    );
    assert_eq!(
        Error::AdminWithoutGlobalKey.to_string(),
        "an admin build needs a global cache key to export to"
    );
}

#[test]
fn access_refuses_cache_repositories_as_base_images() {
    let plan = CachePlan::tenant(registry(), "acme".parse().unwrap(), None);
    let err = plan
        .access(&"1".parse().unwrap(), &repos(&["cache/other-tenant"]))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "base image repository cache/other-tenant is a build-cache repository"
    );
}

#[test]
fn registry_prefix_applies_everywhere() {
    let r: Registry = "registry.internal:443/kiln".parse().unwrap();
    let plan = CachePlan::tenant(
        r.clone(),
        "acme".parse().unwrap(),
        Some("go-1".parse().unwrap()),
    );
    let imports: Vec<String> = plan.imports().iter().map(ToString::to_string).collect();
    assert_eq!(
        imports,
        [
            "type=registry,ref=registry.internal:443/kiln/cache/global/go-1",
            "type=registry,ref=registry.internal:443/kiln/cache/acme",
        ]
    );
    let scopes: Vec<String> = plan
        .access(&"9".parse().unwrap(), &[])
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        scopes,
        [
            "repository:kiln/cache/global/go-1:pull",
            "repository:kiln/cache/acme:pull,push",
            "repository:kiln/builds/9:pull,push",
        ]
    );
}

#[test]
fn the_registry_recognises_cache_repositories_with_a_host_prefix() {
    // The lesson: the registry saw `10.0.0.1:5000/cache/global/node`, and a
    // bare starts_with("cache/") missed it.
    let r = registry();
    for name in [
        "cache/global/node",
        "10.0.0.1:5000/cache/global/node",
        "registry.internal/cache/global/node",
        "localhost:5000/cache/global/node",
        "[::1]:5000/cache/global/node",
    ] {
        assert_eq!(
            r.classify(name).unwrap(),
            RepositoryKind::GlobalCache("node".parse().unwrap()),
            "{name}"
        );
    }
    assert!(r.classify("10.0.0.1:5000/cache/acme").unwrap().is_cache());
    assert!(r.classify("10.0.0.1:5000/cache/x/y/z").unwrap().is_cache());
    assert!(!r.classify("10.0.0.1:5000/builds/1").unwrap().is_cache());
    assert!(!r.classify("cachefoo/x").unwrap().is_cache());
}

#[test]
fn plan_arguments_parse_back_with_both_clients() {
    let plan = CachePlan::tenant(
        registry(),
        "acme".parse().unwrap(),
        Some("node".parse().unwrap()),
    )
    .with_compression(
        Compression::new(CompressionType::Estargz)
            .with_level(9)
            .unwrap(),
    )
    .with_insecure(true);
    for client in [Client::Buildctl, Client::Buildx] {
        let args = plan.cache_args().to_args(client);
        assert_eq!(CacheArgs::parse(client, &args).unwrap(), plan.cache_args());
    }
    let export = plan.export();
    assert_eq!(export.compression(), Some(CompressionType::Estargz));
    assert_eq!(export.compression_level(), Some(9));
    assert_eq!(export.flag("registry.insecure"), Some(true));
}

#[test]
fn plan_json() {
    let plan = CachePlan::tenant(
        registry(),
        "acme".parse().unwrap(),
        Some("node".parse().unwrap()),
    );
    let json = serde_json::to_value(&plan).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "registry": "10.0.0.1:5000",
            "role": "tenant",
            "tenant": "acme",
            "global_key": "node",
            "imports": [
                "type=registry,ref=10.0.0.1:5000/cache/global/node",
                "type=registry,ref=10.0.0.1:5000/cache/acme"
            ],
            "export": "type=registry,ref=10.0.0.1:5000/cache/acme,mode=max,image-manifest=true,oci-mediatypes=true,ignore-error=true"
        })
    );
    // Every option in the JSON is a parsable cache option.
    for v in json["imports"].as_array().unwrap() {
        serde_json::from_value::<CacheOption>(v.clone()).unwrap();
    }
}

#[test]
fn every_backend_example_from_the_docs_parses() {
    for text in [
        "type=registry,ref=<registry>/<cache-image>,mode=max",
        "type=registry,ref=user/app,oci-mediatypes=true,image-manifest=true",
        "type=registry,ref=user/app,compression=zstd,compression-level=3,force-compression=true",
        "type=inline",
        "type=local,dest=path/to/local/dir,mode=max",
        "type=local,src=path/to/local/dir,digest=sha256:6982c70595cb91769f61cd1e064cf5f41d5357387bab6b18c0164c5f98c1f707",
        "type=gha,url=https://cache.example,token=abc,scope=image,mode=max,timeout=10m,version=2",
        "type=s3,region=eu-west-1,bucket=b,name=app,endpoint_url=http://minio:9000,use_path_style=true,upload_parallelism=8,touch_refresh=24h",
        "type=azblob,name=app,account_url=https://acct.blob.core.windows.net,mode=max,ignore-error=true",
    ] {
        let o: CacheOption = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(o.to_string(), text);
    }
}

#[test]
fn names_reject_traversal_and_empties() {
    for bad in ["", " ", "..", "/", "a/b", "../x", "x/..", "%2e%2e"] {
        assert!(TenantScope::parse(bad).is_err(), "{bad:?}");
        assert!(GlobalKey::parse(bad).is_err(), "{bad:?}");
        assert!(BuildId::parse(bad).is_err(), "{bad:?}");
    }
}
