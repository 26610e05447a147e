//! Properties of the parsers and of minting.

use std::time::Duration;

use kiln_registry_token::{
    Action, Actions, Challenge, ChallengeError, KeySet, MintRequest, Minter, Permission,
    RepositoryName, RepositoryPattern, Scope, SigningKey, Verifier,
};
use proptest::prelude::*;

use crate::fuzz_check::check;

fn component() -> impl Strategy<Value = String> {
    "[a-z0-9]{1,6}(([._]|__|-{1,3})[a-z0-9]{1,4}){0,2}"
}

fn repository() -> impl Strategy<Value = RepositoryName> {
    proptest::collection::vec(component(), 1..5).prop_map(|c| c.join("/").parse().unwrap())
}

fn actions() -> impl Strategy<Value = Actions> {
    (any::<bool>(), any::<bool>(), any::<bool>())
        .prop_filter("non-empty", |(a, b, c)| *a || *b || *c)
        .prop_map(|(pull, push, delete)| {
            let mut a = Actions::NONE;
            for (on, act) in [
                (pull, Action::Pull),
                (push, Action::Push),
                (delete, Action::Delete),
            ] {
                if on {
                    a = a.with(act);
                }
            }
            a
        })
}

fn pattern() -> impl Strategy<Value = RepositoryPattern> {
    prop_oneof![
        repository().prop_map(RepositoryPattern::Exact),
        repository().prop_map(RepositoryPattern::Below),
        Just(RepositoryPattern::Any),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn parsers_never_panic(s in ".{0,200}") {
        check(s.as_bytes());
    }

    #[test]
    fn scopes_round_trip(repo in repository(), a in actions()) {
        let s = Scope::repository(&repo, a);
        let back: Scope = s.to_string().parse().unwrap();
        prop_assert_eq!(&back, &s);
        prop_assert_eq!(back.as_repository().unwrap(), (repo, a));
    }

    #[test]
    fn challenges_round_trip(
        realm in "[ -~]{1,40}",
        service in proptest::option::of("[ -~]{0,20}"),
        scopes in proptest::collection::vec((repository(), actions()), 0..4),
        insufficient in any::<bool>(),
    ) {
        let c = Challenge {
            realm,
            service,
            scopes: scopes.iter().map(|(r, a)| Scope::repository(r, *a)).collect(),
            error: insufficient.then_some(ChallengeError::InsufficientScope),
        };
        prop_assert_eq!(c.to_string().parse::<Challenge>().unwrap(), c);
    }

    #[test]
    fn minted_permissions_are_exactly_what_verifies(
        perms in proptest::collection::vec((pattern(), actions()), 0..6),
        probe in repository(),
    ) {
        let permissions: Vec<Permission> = perms.iter().map(|(p, a)| Permission::new(p.clone(), *a)).collect();
        let key = SigningKey::hs256(&[9; 32]).unwrap();
        let mut keys = KeySet::new();
        keys.insert(key.verifying_key().unwrap()).unwrap();
        let token = Minter::new(key, "i", "a")
            .mint(&MintRequest { subject: "s".into(), permissions: permissions.clone(), ttl: Duration::from_secs(60), build_id: None })
            .unwrap();
        let claims = Verifier::new(&keys, "i", "a").verify(&token).unwrap();
        prop_assert_eq!(&claims.permissions, &permissions);
        for action in [Action::Pull, Action::Push, Action::Delete] {
            let expected = permissions.iter().any(|p| p.pattern.matches(&probe) && p.actions.contains(action));
            prop_assert_eq!(claims.authorize(&probe, action).is_ok(), expected);
        }
    }
}
