//! The console's live event stream: one listing ticker for every browser,
//! and one catalog watch per stream through the control plane's hub; each
//! catalog version also sends the cluster's history anew.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::manager::console::view::{CatalogView, HistoryView, Listing, StampedListing};
use crate::manager::hub::Subscription;
use crate::manager::plane::{ControlPlane, PlaneError};
use crate::telemetry::with_causes;

/// How often node liveness is looked at: a dead node shows within this much
/// after the store lists it dead.
const LISTING_INTERVAL: Duration = Duration::from_secs(1);
/// How many of the newest kept versions the history panel shows.
const HISTORY_SHOWN: usize = 20;

/// The console's shared state: the plane and the latest listing, already
/// rendered as JSON once for all streams.
pub struct Console {
    plane: Arc<ControlPlane>,
    listing: watch::Sender<Option<Arc<str>>>,
    shutdown: CancellationToken,
}

impl Console {
    /// Starts the listing ticker; it ends with `shutdown`.
    pub fn start(plane: Arc<ControlPlane>, shutdown: CancellationToken) -> Arc<Console> {
        let console = Arc::new(Console {
            plane,
            listing: watch::Sender::new(None),
            shutdown,
        });
        tokio::spawn(console.clone().track_listing());
        console
    }

    /// Lists the store once per tick while a console is open, and announces
    /// the listing when it differs from the last one.
    async fn track_listing(self: Arc<Self>) {
        let mut ticker = tokio::time::interval(LISTING_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut last: Option<Listing> = None;
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            if self.listing.receiver_count() == 0 {
                // Nobody looks: no store reads. The next console waits one tick.
                if last.take().is_some() {
                    self.listing.send_replace(None);
                }
                continue;
            }
            let listing = self.list().await;
            if last.as_ref() == Some(&listing) {
                continue;
            }
            let stamped = StampedListing {
                now_ms: now_ms(),
                listing: &listing,
            };
            match serde_json::to_string(&stamped) {
                Ok(json) => {
                    self.listing.send_replace(Some(json.into()));
                    last = Some(listing);
                }
                Err(e) => tracing::warn!(error = %e, "console listing not serializable"),
            }
        }
    }

    async fn list(&self) -> Listing {
        let clusters = self.plane.list_clusters().await;
        let nodes = self.plane.list_nodes_with_lag("").await;
        match (clusters, nodes) {
            (Ok(clusters), Ok(nodes)) => Listing::new(clusters, nodes),
            (Err(e), _) | (_, Err(e)) => Listing::failed(e.to_string()),
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    /// The cluster whose catalog to stream; none: listings only.
    #[serde(default)]
    cluster: Option<String>,
}

/// `GET /console/events`: server-sent `listing` and `catalog` events until the
/// browser leaves or the manager shuts down.
pub async fn stream(
    State(console): State<Arc<Console>>,
    Query(query): Query<EventsQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ConsoleError> {
    let catalogs = match query.cluster.filter(|c| !c.is_empty()) {
        Some(cluster) => {
            let watch = console.plane.watch(&cluster).await?;
            catalog_events(console.plane.clone(), cluster, watch).boxed()
        }
        None => futures::stream::empty().boxed(),
    };
    let listings = WatchStream::new(console.listing.subscribe()).filter_map(|listing| async move {
        listing.map(|json| Event::default().event("listing").data(&*json))
    });
    let events = futures::stream::select(listings, catalogs)
        .map(Ok)
        .take_until(console.shutdown.clone().cancelled_owned());
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// Every catalog version the subscription yields, as a `catalog` event
/// followed by a `history` event (the history changes with each version).
fn catalog_events(
    plane: Arc<ControlPlane>,
    cluster: String,
    subscription: Subscription,
) -> impl Stream<Item = Event> + Send {
    // No snapshot has this version, so the first one always goes out.
    let versions =
        futures::stream::unfold((subscription, u64::MAX), |(mut sub, known)| async move {
            let snapshot = sub.next_different(known).await?;
            let version = snapshot.version;
            Some((snapshot, (sub, version)))
        });
    versions.flat_map(move |snapshot| {
        let (plane, cluster) = (plane.clone(), cluster.clone());
        let catalog = json_event("catalog", &CatalogView::new(&snapshot));
        let history = async move {
            let view = match plane.history(&cluster, HISTORY_SHOWN).await {
                Ok(entries) => HistoryView::new(&cluster, entries),
                Err(e) => HistoryView::failed(&cluster, e.to_string()),
            };
            json_event("history", &view)
        };
        futures::stream::once(async { catalog }).chain(futures::stream::once(history))
    })
}

fn json_event(name: &str, value: &impl Serialize) -> Event {
    match serde_json::to_string(value) {
        Ok(json) => Event::default().event(name).data(json),
        Err(e) => Event::default().event("failure").data(e.to_string()),
    }
}

/// A stream the plane refused to open.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct ConsoleError(#[from] PlaneError);

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": with_causes(&self.0) });
        (crate::manager::legacy::http_status(&self.0), Json(body)).into_response()
    }
}
