//! `Inbox`: per-tenant order, dedupe by `(tenant, update_id)` that outlives delivery, idempotent
//! ack, the set of tenants with work, exclusive expiring claims, stats.

use std::time::Duration;

use super::{eventually, tid, EXPIRY_DEADLINE};
use crate::inbox::{now_ms, Appended, Inbox};

const LONG: Duration = Duration::from_secs(60);

pub async fn inbox(i: &dyn Inbox) {
    i.ping().await.expect("ping");
    let (a, b) = (tid("inbox-a"), tid("inbox-b"));

    assert!(i.tenants().await.unwrap().is_empty());
    let empty = i.stats().await.unwrap();
    assert_eq!((empty.depth, empty.oldest_received_at_ms), (0, None));
    assert!(i.pending(&a, 10).await.unwrap().is_empty());

    // Append, in order, deduplicated per tenant.
    let before = now_ms();
    let payload =
        |n: i64| format!("{{\"update_id\":{n},\"text\":\"héllo \\u0000 {n}\"}}").into_bytes();
    for u in [30, 10, 20] {
        assert_eq!(i.append(&a, u, &payload(u)).await.unwrap(), Appended::New);
    }
    let after = now_ms();
    assert_eq!(
        i.append(&a, 10, b"retry").await.unwrap(),
        Appended::Duplicate
    );
    assert_eq!(
        i.append(&b, 10, &payload(10)).await.unwrap(),
        Appended::New,
        "dedupe is per tenant"
    );

    let got = i.pending(&a, 10).await.unwrap();
    let order: Vec<i64> = got.iter().map(|e| e.update_id).collect();
    assert_eq!(order, [30, 10, 20], "arrival order, not update_id order");
    for e in &got {
        assert_eq!(
            e.payload,
            payload(e.update_id),
            "payload stored as received"
        );
        assert!(
            (before - 1000..=after + 1000).contains(&e.received_at_ms),
            "received_at_ms {} outside [{before}, {after}]",
            e.received_at_ms
        );
    }
    let first_two = i.pending(&a, 2).await.unwrap();
    assert_eq!(first_two, got[..2], "limit takes the oldest");

    let tenants: Vec<String> = i
        .tenants()
        .await
        .unwrap()
        .iter()
        .map(|t| t.to_string())
        .collect();
    assert_eq!(tenants, ["inbox-a", "inbox-b"]);
    let stats = i.stats().await.unwrap();
    assert_eq!(stats.depth, 4);
    let oldest = stats.oldest_received_at_ms.expect("oldest");
    assert!(oldest <= got[0].received_at_ms && oldest >= before - 1000);

    // Ack removes one entry, is idempotent, and the update stays a duplicate.
    i.ack(&a, &got[0].id).await.unwrap();
    i.ack(&a, &got[0].id).await.unwrap();
    let rest: Vec<i64> = i
        .pending(&a, 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.update_id)
        .collect();
    assert_eq!(rest, [10, 20]);
    assert_eq!(
        i.append(&a, 30, b"late retry").await.unwrap(),
        Appended::Duplicate
    );
    assert_eq!(i.stats().await.unwrap().depth, 3);

    // A tenant with nothing left leaves the set; a new update brings it back.
    for e in i.pending(&b, 10).await.unwrap() {
        i.ack(&b, &e.id).await.unwrap();
    }
    let tenants: Vec<String> = i
        .tenants()
        .await
        .unwrap()
        .iter()
        .map(|t| t.to_string())
        .collect();
    assert_eq!(tenants, ["inbox-a"]);
    assert_eq!(i.append(&b, 11, &payload(11)).await.unwrap(), Appended::New);
    assert_eq!(i.tenants().await.unwrap().len(), 2);

    // Many updates keep their order.
    let c = tid("inbox-c");
    for u in 0..200 {
        assert_eq!(
            i.append(&c, 1000 - u, &payload(u)).await.unwrap(),
            Appended::New
        );
    }
    let got: Vec<i64> = i
        .pending(&c, 500)
        .await
        .unwrap()
        .iter()
        .map(|e| e.update_id)
        .collect();
    assert_eq!(got, (0..200).map(|u| 1000 - u).collect::<Vec<_>>());

    for t in [&a, &b, &c] {
        for e in i.pending(t, 500).await.unwrap() {
            i.ack(t, &e.id).await.unwrap();
        }
    }
    assert!(i.tenants().await.unwrap().is_empty());
    let drained = i.stats().await.unwrap();
    assert_eq!((drained.depth, drained.oldest_received_at_ms), (0, None));

    claims(i).await;
    cap(i).await;
}

/// A tenant's pending cap: refused appends write nothing (a retry later is new), duplicates stay
/// duplicates, other tenants are unaffected, and concurrent appends never overshoot.
async fn cap(i: &dyn Inbox) {
    let (full, other) = (tid("cap-full"), tid("cap-other"));
    for u in 1..=3 {
        assert_eq!(
            i.append_within(&full, u, b"{}", 3).await.unwrap(),
            Appended::New
        );
    }
    assert_eq!(
        i.append_within(&full, 4, b"{}", 3).await.unwrap(),
        Appended::Full,
        "a fourth entry over a cap of 3"
    );
    assert_eq!(
        i.append_within(&full, 2, b"{}", 3).await.unwrap(),
        Appended::Duplicate,
        "a duplicate is still a duplicate at the cap"
    );
    assert_eq!(
        i.append_within(&other, 4, b"{}", 3).await.unwrap(),
        Appended::New,
        "the cap is per tenant"
    );
    assert_eq!(i.pending(&full, 10).await.unwrap().len(), 3);
    let head = i.pending(&full, 1).await.unwrap().remove(0);
    i.ack(&full, &head.id).await.unwrap();
    assert_eq!(
        i.append_within(&full, 4, b"{}", 3).await.unwrap(),
        Appended::New,
        "the refused update was not marked seen: its retry is accepted once there is room"
    );
    assert_eq!(
        i.append_within(&full, 5, b"{}", 3).await.unwrap(),
        Appended::Full
    );
    let got: Vec<i64> = i
        .pending(&full, 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.update_id)
        .collect();
    assert_eq!(got, [2, 3, 4]);

    // Many webhooks at once: exactly the cap is accepted.
    let burst = tid("cap-burst");
    let results = futures::future::join_all((0..50).map(|u| {
        let burst = &burst;
        async move { i.append_within(burst, u, b"{}", 10).await.unwrap() }
    }))
    .await;
    let new = results.iter().filter(|r| **r == Appended::New).count();
    let refused = results.iter().filter(|r| **r == Appended::Full).count();
    assert_eq!(
        (new, refused),
        (10, 40),
        "a cap of 10 under 50 concurrent appends"
    );
    assert_eq!(i.pending(&burst, 100).await.unwrap().len(), 10);

    for t in [&full, &other, &burst] {
        for e in i.pending(t, 100).await.unwrap() {
            i.ack(t, &e.id).await.unwrap();
        }
    }
}

async fn claims(i: &dyn Inbox) {
    let (a, b) = (tid("claim-a"), tid("claim-b"));
    assert!(i.claim(&a, "r1", LONG).await.unwrap());
    assert!(
        !i.claim(&a, "r2", LONG).await.unwrap(),
        "one deliverer per tenant"
    );
    assert!(
        i.claim(&b, "r2", LONG).await.unwrap(),
        "tenants are independent"
    );
    assert!(
        !i.renew_claim(&a, "r2", LONG).await.unwrap(),
        "only the owner renews"
    );
    assert!(i.renew_claim(&a, "r1", LONG).await.unwrap());
    i.release_claim(&a, "r2").await.unwrap();
    assert!(
        !i.claim(&a, "r2", LONG).await.unwrap(),
        "a foreign release frees nothing"
    );
    i.release_claim(&a, "r1").await.unwrap();
    assert!(
        i.claim(&a, "r2", LONG).await.unwrap(),
        "released claim is free"
    );

    // A dead deliverer's claim expires, so another replica resumes the tenant.
    let t = tid("claim-expiry");
    assert!(i
        .claim(&t, "dead", Duration::from_millis(300))
        .await
        .unwrap());
    eventually("the claim to expire", EXPIRY_DEADLINE, || async {
        i.claim(&t, "alive", LONG).await.unwrap()
    })
    .await;
    assert!(
        !i.renew_claim(&t, "dead", LONG).await.unwrap(),
        "an expired claim is lost"
    );
    i.release_claim(&t, "dead").await.unwrap();
    assert!(
        !i.claim(&t, "third", LONG).await.unwrap(),
        "the new owner keeps it"
    );
}
