//! The operator's web console, served by the manager at `/`.
//!
//! The page (plain HTML, JavaScript and CSS, embedded in the binary: it works
//! offline, with no build step) loads without a token; its data comes from one
//! server-sent event stream, `GET /console/events?cluster=…`, which sits
//! behind the manager's bearer-token check like every RPC. The stream carries:
//!
//! - `listing`: every cluster and node, with each node's applied catalog
//!   version, lag and last sync error. One manager-side ticker lists the
//!   store once per second while any console is open and hands the same
//!   listing to every stream, only when it changed ([`events`]);
//! - `catalog`: the chosen cluster's catalog ([`view`], hashes left out),
//!   fed by the control plane's watch fan-out, so a change shows at once;
//! - `history`: the chosen cluster's newest kept versions, sent again after
//!   every `catalog` event.

mod events;
mod view;

use std::sync::Arc;

use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::manager::plane::ControlPlane;

pub use events::Console;

const INDEX_HTML: &str = include_str!("assets/index.html");
const CONSOLE_JS: &str = include_str!("assets/console.js");
const CONSOLE_CSS: &str = include_str!("assets/console.css");

/// Nothing but this manager's own assets, so a page can load nothing else.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'";

/// The page and its assets: open, they hold no data.
pub fn page_router() -> Router {
    Router::new()
        .route("/", get(|| async { page(Html(INDEX_HTML)) }))
        .route(
            "/console/console.js",
            get(|| async {
                page((
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    CONSOLE_JS,
                ))
            }),
        )
        .route(
            "/console/console.css",
            get(|| async {
                page((
                    [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
                    CONSOLE_CSS,
                ))
            }),
        )
}

fn page(body: impl IntoResponse) -> impl IntoResponse {
    (
        [
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
}

/// The console's data: to be placed behind the token check. Starts the
/// listing ticker, which runs until `shutdown`; so do the streams.
pub fn data_router(plane: Arc<ControlPlane>, shutdown: CancellationToken) -> Router {
    let console = Console::start(plane, shutdown);
    Router::new()
        .route("/console/events", get(events::stream))
        .with_state(console)
}
