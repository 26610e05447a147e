//! The cache-option fuzz check, shared by the fuzz target and the corpus
//! replay in `cargo test` (`cache-key/tests/integration/fuzz_corpus.rs`).

use kiln_cache_key::{
    BuildId, CacheArgs, CacheOption, CachePlan, Client, GlobalKey, Registry, Repository,
    RepositoryKind, TenantScope,
};

/// Feeds `data` to every parser of `kiln-cache-key` and checks the
/// round-trip invariants: the whole input as one cache option
/// (parse → render → parse gives the same value, and rendering is a fixed
/// point), its lines as `buildctl` and `buildx` argument lists, and each
/// line as a tenant scope, global key, registry and repository name.
/// Returns whether anything parsed (worth keeping in a corpus). Panics on
/// any broken invariant.
pub(crate) fn check(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let mut parsed = false;

    if let Ok(option) = CacheOption::parse(text) {
        parsed = true;
        check_option(&option);
    }

    let lines: Vec<&str> = text.split('\n').collect();
    for client in [Client::Buildctl, Client::Buildx] {
        if let Ok(args) = CacheArgs::parse(client, &lines) {
            parsed = true;
            for option in args.imports().iter().chain(args.exports()) {
                check_option(option);
            }
            for to in [Client::Buildctl, Client::Buildx] {
                let rendered = args.to_args(to);
                let back = CacheArgs::parse(to, &rendered).expect("rendered arguments parse");
                assert_eq!(back, args, "{rendered:?}");
            }
        }
    }

    let registry: Registry = "10.0.0.1:5000/kiln".parse().expect("registry");
    for line in lines.iter().take(16) {
        parsed |= check_names(&registry, line);
    }
    parsed
}

fn check_option(option: &CacheOption) {
    let rendered = option.to_string();
    let again = CacheOption::parse(&rendered)
        .unwrap_or_else(|e| panic!("rendered option {rendered:?} does not parse: {e}"));
    assert_eq!(&again, option, "{rendered:?}");
    assert_eq!(again.to_string(), rendered);
    for (key, value) in option.attrs() {
        assert!(!key.is_empty() && key != "type");
        assert!(!value.contains(['\r', '\n', '\0']), "{value:?}");
    }
}

fn check_names(registry: &Registry, line: &str) -> bool {
    let mut parsed = false;
    if let Ok(tenant) = TenantScope::parse(line) {
        parsed = true;
        assert_eq!(TenantScope::parse(tenant.as_str()).as_ref(), Ok(&tenant));
        assert!(!TenantScope::RESERVED.contains(&tenant.as_str()));
        let repo = registry.tenant_cache(&tenant);
        assert_eq!(
            registry.classify(&registry.reference(&repo)),
            Ok(RepositoryKind::TenantCache(tenant.clone()))
        );
        let plan = CachePlan::tenant(registry.clone(), tenant, GlobalKey::parse(line).ok());
        check_plan(&plan);
    }
    if let Ok(key) = GlobalKey::parse(line) {
        parsed = true;
        assert_eq!(GlobalKey::parse(key.as_str()).as_ref(), Ok(&key));
        let repo = registry.global_cache(&key);
        assert_eq!(
            registry.classify(repo.as_str()),
            Ok(RepositoryKind::GlobalCache(key.clone()))
        );
        let plan = CachePlan::admin(registry.clone(), Some(key)).expect("admin plan");
        check_plan(&plan);
    }
    if let Ok(repo) = Repository::parse(line) {
        parsed = true;
        assert_eq!(Repository::parse(repo.as_str()).as_ref(), Ok(&repo));
        let exact = registry.classify_path(&repo);
        let lenient = registry
            .classify(line)
            .expect("valid repository classifies");
        if exact.is_cache() {
            assert_eq!(lenient, exact);
        }
    } else {
        let _ = registry.classify(line);
    }
    if let Ok(r) = Registry::parse(line) {
        parsed = true;
        assert_eq!(Registry::parse(r.as_str()).as_ref(), Ok(&r));
    }
    parsed
}

fn check_plan(plan: &CachePlan) {
    let export = plan.export();
    assert_eq!(export.get("mode"), Some("max"));
    assert_eq!(export.get("image-manifest"), Some("true"));
    assert_eq!(export.get("oci-mediatypes"), Some("true"));
    check_option(&export);
    for option in plan.imports() {
        check_option(&option);
    }
    for client in [Client::Buildctl, Client::Buildx] {
        let args = plan.cache_args().to_args(client);
        let back = CacheArgs::parse(client, &args).expect("plan arguments parse");
        assert_eq!(back, plan.cache_args());
    }
    let id: BuildId = "1".parse().expect("build id");
    let access = plan.access(&id, &[]).expect("access without base images");
    let pushes: Vec<&str> = access
        .iter()
        .filter(|a| a.allows(kiln_cache_key::Action::Push))
        .map(|a| a.repository().as_str())
        .collect();
    let export_repo = plan.export_repository();
    assert!(pushes.contains(&export_repo.as_str()));
    // Only the export target and the build result are writable.
    assert_eq!(pushes.len(), 2, "{pushes:?}");
}
