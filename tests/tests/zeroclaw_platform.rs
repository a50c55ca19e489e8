//! The whole platform with real ZeroClaw agents: the local runtime starts `zeroclaw-launcher`
//! (`AGENT_COMMAND`) for a tenant, a Telegram update is answered through ZeroClaw and the
//! stand-in model, and the memory survives the tenant's sleep and wake.

mod platform {
    use std::path::PathBuf;
    use std::time::Duration;

    use platform_tests::model::{messages_with_role, reply_to, StandInModel};
    use platform_tests::platform::{bin_path, bot_token, Opts, Platform};

    fn zeroclaw_bin() -> PathBuf {
        std::env::var_os("ZEROCLAW_BIN")
            .map(PathBuf::from)
            .expect("ZEROCLAW_BIN is not set: run `make test-zeroclaw`, which installs zeroclaw")
    }

    #[tokio::test]
    #[ignore = "needs the real zeroclaw binary: make test-zeroclaw"]
    async fn a_telegram_update_is_answered_through_zeroclaw_and_its_memory_survives_sleep() {
        let model = StandInModel::start().await;
        let platform = Platform::start_with(
            Opts::default()
                .orchestrator_env("AGENT_COMMAND", bin_path("zeroclaw-launcher").display())
                .orchestrator_env("ZEROCLAW_BIN", zeroclaw_bin().display())
                .orchestrator_env("LLM_PROVIDER", "llamacpp")
                .orchestrator_env("LLM_API_URL", model.base_url())
                .orchestrator_env("LLM_MODEL", "stand-in"),
        )
        .await;
        platform.create_tenant("zed", &bot_token(), None).await;
        // The tenant's persona, set through the orchestrator's API as `ztm tenant config set` does.
        let persona = "You are Zed, a terse lighthouse keeper.";
        let put = platform
            .request(
                reqwest::Method::PUT,
                &platform.orch_url("/tenants/zed/config"),
            )
            .json(&serde_json::json!({"files": {"SOUL.md": persona}}))
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 200);

        platform.send_text("zed", 1, 4242, "hello zeroclaw").await;
        let texts = platform
            .telegram
            .wait_for_messages(4242, 2, Duration::from_secs(90))
            .await;
        assert!(
            texts.contains(&reply_to("hello zeroclaw")),
            "{texts:?}\n{}",
            platform.logs()
        );

        platform.sleep_tenant("zed").await;
        platform.send_text("zed", 2, 4242, "still there?").await;
        let texts = platform
            .telegram
            .wait_for("the reply after wake", Duration::from_secs(90), |calls| {
                calls
                    .iter()
                    .any(|c| c.text() == Some(reply_to("still there?").as_str()))
            })
            .await;
        assert!(!texts.is_empty());
        let requests = model.requests();
        assert!(requests.len() >= 2, "both messages reached the model");
        assert!(
            requests.iter().all(|r| messages_with_role(r, "system")
                .iter()
                .any(|m| m.contains(persona))),
            "the persona reached every system prompt"
        );
    }
}
