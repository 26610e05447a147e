//! Property tests: parse(render(x)) == x for arbitrary cache options
//! (including unknown attributes whose values hold commas, quotes and
//! equals signs), no panics on arbitrary input, and the plan invariants.

use kiln_cache_key::{
    Backend, CacheArgs, CacheOption, CachePlan, Client, GlobalKey, Registry, RepositoryKind,
    TenantScope,
};
use proptest::prelude::*;
use proptest::sample::{select, subsequence};

const BOOLS: &[&str] = &[
    "1", "t", "T", "TRUE", "true", "True", "0", "f", "F", "FALSE", "false", "False",
];

/// Any attribute value: no CR, LF or NUL, heavy on CSV metacharacters.
fn any_value() -> BoxedStrategy<String> {
    prop_oneof![
        "[^\r\n\u{0}]{0,24}",
        "[,\"= a\u{e9}]{0,12}",
        Just(String::new()),
        Just("\"".to_owned()),
        Just(" leading".to_owned()),
    ]
    .boxed()
}

/// A valid value for a known attribute (in any accepted spelling).
fn known_value(key: &'static str) -> BoxedStrategy<String> {
    let pick = |v: &[&'static str]| select(v.to_vec()).prop_map(str::to_owned).boxed();
    match key {
        "mode" => pick(&["min", "max"]),
        "ignore-error"
        | "oci-mediatypes"
        | "image-manifest"
        | "registry.insecure"
        | "use_path_style"
        | "disable_accept_encoding" => pick(BOOLS),
        "force-compression" => prop_oneof![pick(BOOLS), Just(String::new())].boxed(),
        "compression" => pick(&["uncompressed", "gzip", "estargz", "zstd", "zstd:chunked"]),
        "compression-level" => prop_oneof![
            (0u8..=22).prop_map(|n| n.to_string()),
            (0u8..=22).prop_map(|n| format!("+0{n}")),
        ]
        .boxed(),
        "upload_parallelism" | "retry_max_attempts" => {
            (1u32..100_000).prop_map(|n| n.to_string()).boxed()
        }
        "timeout" | "touch_refresh" => pick(&["0", "90s", "1h30m", ".5s", "-2ms", "3µs"]),
        "retry_mode" => pick(&["standard", "adaptive"]),
        _ => any_value(),
    }
}

fn cache_option() -> impl Strategy<Value = CacheOption> {
    select(Backend::ALL.to_vec())
        .prop_flat_map(|backend| {
            let known: Vec<&'static str> = backend.known_attributes().collect();
            let n = known.len();
            let known_attrs = subsequence(known, 0..=n).prop_flat_map(|keys| {
                keys.into_iter()
                    .map(|k| known_value(k).prop_map(move |v| (k.to_owned(), v)))
                    .collect::<Vec<_>>()
            });
            let unknown = prop::collection::vec(("[a-zA-Z0-9._:-]{1,12}", any_value()), 0..5);
            (Just(backend), known_attrs, unknown, any::<u64>())
        })
        .prop_map(|(backend, known, unknown, seed)| {
            // Interleave known and unknown attributes deterministically.
            let mut all: Vec<(String, String)> = known.into_iter().chain(unknown).collect();
            let len = all.len().max(1);
            all.rotate_left(usize::try_from(seed % len as u64).unwrap_or(0));
            let mut option = CacheOption::new(backend);
            for (k, v) in all {
                let lower = k.to_ascii_lowercase();
                if lower == "type" || option.get(&lower).is_some() {
                    continue;
                }
                option = option
                    .with(&k, &v)
                    .unwrap_or_else(|e| panic!("{k}={v:?}: {e}"));
            }
            option
        })
}

fn registry() -> impl Strategy<Value = Registry> {
    select(vec![
        "10.0.0.1:5000",
        "localhost:5000/kiln",
        "[::1]:5000",
        "registry.example.com/a/b",
        "reg.internal",
    ])
    .prop_map(|r| r.parse().unwrap())
}

fn name() -> impl Strategy<Value = String> {
    "[a-z0-9]{1,6}(-[a-z0-9]{1,6}){0,3}"
        .prop_filter("3..=64 chars", |s| (3..=64).contains(&s.len()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn options_round_trip(option in cache_option()) {
        let rendered = option.to_string();
        let parsed = CacheOption::parse(&rendered);
        prop_assert_eq!(parsed.as_ref(), Ok(&option), "{}", rendered);
        prop_assert_eq!(parsed.unwrap().to_string(), rendered);
    }

    #[test]
    fn options_round_trip_through_arguments(
        imports in prop::collection::vec(cache_option(), 0..3),
        exports in prop::collection::vec(cache_option(), 0..2),
    ) {
        let mut args = CacheArgs::new();
        for o in imports {
            args = args.with(kiln_cache_key::Direction::Import, o);
        }
        for o in exports {
            args = args.with(kiln_cache_key::Direction::Export, o);
        }
        for client in [Client::Buildctl, Client::Buildx] {
            let rendered = args.to_args(client);
            prop_assert_eq!(CacheArgs::parse(client, &rendered), Ok(args.clone()));
        }
    }

    #[test]
    fn parse_never_panics(s in any::<String>()) {
        if let Ok(o) = CacheOption::parse(&s) {
            prop_assert_eq!(CacheOption::parse(&o.to_string()), Ok(o));
        }
    }

    #[test]
    fn parse_never_panics_on_csv_shaped_input(s in "[a-z=,\" \r\n.:-]{0,40}") {
        if let Ok(o) = CacheOption::parse(&s) {
            prop_assert_eq!(CacheOption::parse(&o.to_string()), Ok(o));
        }
        let _ = CacheArgs::parse(Client::Buildx, s.split(' '));
        let _ = CacheArgs::parse(Client::Buildctl, s.split(' '));
    }

    #[test]
    fn names_normalise_idempotently(s in any::<String>()) {
        if let Ok(t) = TenantScope::parse(&s) {
            prop_assert_eq!(TenantScope::parse(t.as_str()), Ok(t.clone()));
            prop_assert!(t.as_str().bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-'));
        }
        if let Ok(k) = GlobalKey::parse(&s) {
            prop_assert_eq!(GlobalKey::parse(k.as_str()), Ok(k));
        }
        let _ = Registry::parse(&s);
        let reg: Registry = "r:1/p".parse().unwrap();
        let _ = reg.classify(&s);
    }

    #[test]
    fn plans_hold_their_invariants(
        registry in registry(),
        tenant in name(),
        key in prop::option::of(name()),
        admin in any::<bool>(),
    ) {
        let Ok(tenant) = TenantScope::parse(&tenant) else { return Ok(()) };
        let key = key.map(|k| GlobalKey::parse(&k).unwrap());
        let plan = if admin {
            match CachePlan::admin(registry.clone(), key.clone()) {
                Ok(p) => p,
                Err(_) => { prop_assert!(key.is_none()); return Ok(()); }
            }
        } else {
            CachePlan::tenant(registry.clone(), tenant.clone(), key.clone())
        };
        let export = plan.export();
        prop_assert_eq!(export.get("mode"), Some("max"));
        prop_assert_eq!(export.get("image-manifest"), Some("true"));
        prop_assert_eq!(export.get("oci-mediatypes"), Some("true"));
        prop_assert_eq!(CacheOption::parse(&export.to_string()), Ok(export.clone()));
        let export_kind = registry.classify(export.get("ref").unwrap()).unwrap();
        if admin {
            prop_assert_eq!(export_kind, RepositoryKind::GlobalCache(key.clone().unwrap()));
        } else {
            prop_assert_eq!(export_kind, RepositoryKind::TenantCache(tenant.clone()));
        }
        let imports = plan.imports();
        let expected = usize::from(key.is_some()) + usize::from(!admin);
        prop_assert_eq!(imports.len(), expected);
        for client in [Client::Buildctl, Client::Buildx] {
            let args = plan.cache_args().to_args(client);
            prop_assert_eq!(CacheArgs::parse(client, &args), Ok(plan.cache_args()));
        }
    }
}
