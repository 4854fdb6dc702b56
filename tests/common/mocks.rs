//! wiremock helpers, apart from the rest of `common` so that tests built without the
//! `harness` feature can include them (`#[path = "common/mocks.rs"] mod mocks;`).

/// Mounts `answer` for GET requests on `server` (for the first `times` of them when given:
/// later ones go to the mocks mounted after).
pub async fn serve_gets(
    server: &wiremock::MockServer,
    answer: wiremock::ResponseTemplate,
    times: Option<u64>,
) {
    let mock = wiremock::Mock::given(wiremock::matchers::method("GET")).respond_with(answer);
    match times {
        Some(n) => mock.up_to_n_times(n),
        None => mock,
    }
    .mount(server)
    .await;
}
