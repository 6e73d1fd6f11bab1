//! Authorization: a tool that needs a permission runs only for callers that hold it.

use colloquy_tools::{CallerIdentity, ExecutorConfig};
use serde_json::json;

use crate::support::{Fixture, ctx, only_result, probe};

#[tokio::test(start_paused = true)]
async fn a_caller_without_the_permission_is_refused_and_the_tool_never_runs() {
    let f = Fixture::new(Some("orders:write"));
    let context = json!({"user": "ann", "tenant": "acme", "permissions": ["orders:read"]});
    let events = f.events_with(vec![probe("a", "ok")], ctx(context), ExecutorConfig::default()).await;
    assert_eq!(
        only_result(&events),
        (
            true,
            "not authorized: `probe` requires the `orders:write` permission, which user `ann` does not have; answer \
             without this tool, or ask an administrator to grant the permission"
                .to_owned()
        )
    );
    // No context at all grants nothing either.
    let events = f.events(vec![probe("b", "ok")]).await;
    assert!(only_result(&events).1.contains("which the caller does not have"), "{events:?}");
    assert_eq!(f.runs(), 0);

    let context = json!({"user": "bob", "permissions": ["orders:read", "orders:write"]});
    let events = f.events_with(vec![probe("c", "ok")], ctx(context), ExecutorConfig::default()).await;
    assert_eq!(only_result(&events), (false, "fine".to_owned()));
    assert_eq!(f.runs(), 1);
}

#[test]
fn the_identity_is_read_from_the_context_and_anything_malformed_grants_nothing() {
    let identity = CallerIdentity::from_context(&json!({"user": "ann", "tenant": 7, "permissions": ["a", 3, "b"]}));
    assert_eq!(
        identity,
        CallerIdentity {
            user: Some("ann".to_owned()),
            tenant: Some("7".to_owned()),
            permissions: vec!["a".to_owned(), "b".to_owned()]
        }
    );
    assert!(identity.has_permission("b") && !identity.has_permission("c"));
    assert_eq!(CallerIdentity::from_context(&json!({"permissions": "a,b"})), CallerIdentity::default());
    assert_eq!(CallerIdentity::from_context(&json!([1, 2])), CallerIdentity::default());
    assert_eq!(ctx(json!({"permissions": ["x"]})).identity.permissions, vec!["x".to_owned()]);
}
