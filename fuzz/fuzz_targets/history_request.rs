//! The client input of channel history: the `history` field of a `pusher:subscribe`
//! frame (first byte even) or a REST history query string (first byte odd), through
//! what the broker does with it: `HistoryRequest::parse` against an app's bounds and
//! the replay plan against a window; `HistoryQuery::parse` for the REST page.

#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::{
    frame::ClientFrame,
    history::{
        plan, recovery_frame, HistoryConfig, HistoryQuery, HistoryRequest, Recovery, Rewind,
        Status, Window,
    },
};
use protocol_fuzz::assert_json_object;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let config = HistoryConfig {
        channels: vec!["*".into()],
        max_events: 50,
        max_age_secs: 60,
        max_socket_ids: 3,
        max_page: 20,
        ..HistoryConfig::default()
    };
    if mode % 2 == 1 {
        let Ok(params) = serde_urlencoded::from_str::<Vec<(String, String)>>(text) else {
            return;
        };
        let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        if let Ok(q) = HistoryQuery::parse(param, config.max_page) {
            assert!((1..=config.max_page).contains(&q.limit), "{q:?}");
            if let (Some(s), Some(e)) = (q.start, q.end) {
                assert!(s <= e);
            }
        }
        return;
    }
    let Ok(ClientFrame::Subscribe(s)) = ClientFrame::parse(text) else {
        return;
    };
    let Some(raw) = s.history else { return };
    let Ok(request) = HistoryRequest::parse(&raw, &config) else {
        return;
    };
    match &request {
        HistoryRequest::Rewind(Rewind::Count(n)) => assert!(*n <= config.max_events),
        HistoryRequest::Rewind(Rewind::Seconds(n)) => assert!(*n <= config.max_age_secs),
        HistoryRequest::Resume { epoch, .. } => assert!(!epoch.is_empty()),
        HistoryRequest::Positions => {}
    }
    assert!(request.excluded().len() <= config.max_socket_ids);
    // A window derived from the mode byte: every plan stays inside it.
    let newest = u64::from(mode) * 3;
    let window = Window {
        epoch: "e".into(),
        oldest: newest / 2 + 1,
        newest,
    };
    let planned = plan(&request, &window);
    if let Ok(after) = planned {
        assert!(after <= window.newest, "{after} > {}", window.newest);
        if let HistoryRequest::Resume { position, .. } = &request {
            assert_eq!(after, *position);
            assert!(position + 1 >= window.oldest && *position <= window.newest);
        }
    }
    let notice = recovery_frame(
        s.channel.as_str(),
        &Recovery {
            status: if planned.is_ok() {
                Status::Recovered
            } else {
                Status::Failed
            },
            reason: planned.err(),
            epoch: Some(&window.epoch),
            position: Some(window.newest),
            replayed: 0,
        },
    );
    assert_json_object(&notice);
});
