//! `StateStore`: save/load round trip, replace, per-tenant isolation, idempotent delete.

use super::tid;
use crate::state::StateStore;

pub async fn state(s: &dyn StateStore) {
    s.ping().await.expect("ping");
    let (a, b) = (tid("state-a"), tid("state-b"));

    assert_eq!(s.load(&a).await.unwrap(), None, "never saved");
    s.save(&a, b"first").await.unwrap();
    assert_eq!(s.load(&a).await.unwrap().as_deref(), Some(&b"first"[..]));

    // A bigger binary file replaces the old one entirely.
    let big: Vec<u8> = (0..3 * 1024 * 1024).map(|i: u32| (i % 251) as u8).collect();
    s.save(&a, &big).await.unwrap();
    assert_eq!(
        s.load(&a).await.unwrap(),
        Some(big),
        "replaced, byte for byte"
    );

    s.save(&b, b"").await.unwrap();
    assert_eq!(
        s.load(&b).await.unwrap(),
        Some(Vec::new()),
        "an empty file is a file"
    );

    s.delete(&a).await.unwrap();
    assert_eq!(s.load(&a).await.unwrap(), None);
    s.delete(&a).await.unwrap(); // idempotent
    s.delete(&tid("state-never")).await.unwrap();
    assert_eq!(
        s.load(&b).await.unwrap(),
        Some(Vec::new()),
        "other tenants untouched"
    );
}
