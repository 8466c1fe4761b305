//! A push on request: whoever just changed the node's metadata (the front
//! door, after influxd carried out a `CREATE` or a `DROP`) asks the sync
//! task to reconcile at once, and learns the cluster catalog version that
//! holds the node's metadata as it was when it asked. The front door's
//! catalog barrier then waits for the other nodes to apply that version.
//!
//! Requests are tickets on a watch: a burst of them is served by one
//! reconciliation, and each asker waits for an answer to a ticket at least
//! as new as its own.

use tokio::sync::watch;

/// The answer to a push request: the version that holds the node's
/// metadata, or why it could not be pushed now (the manager cannot be
/// reached, a cluster catalog waits to be applied).
pub type PushAnswer = Result<u64, String>;

/// The requests of one node's askers, and the sync task's answers.
#[derive(Debug)]
pub struct PushNow {
    asked: watch::Sender<u64>,
    answered: watch::Sender<(u64, PushAnswer)>,
}

impl Default for PushNow {
    fn default() -> Self {
        PushNow {
            asked: watch::Sender::new(0),
            answered: watch::Sender::new((0, Err("nothing asked yet".to_owned()))),
        }
    }
}

impl PushNow {
    /// Has the node's metadata pushed now; waits until the sync task
    /// answers (the caller bounds the wait).
    pub async fn push(&self) -> PushAnswer {
        let mut answered = self.answered.subscribe();
        let mut ticket = 0;
        self.asked.send_modify(|n| {
            *n += 1;
            ticket = *n;
        });
        loop {
            {
                let (done, answer) = &*answered.borrow_and_update();
                if *done >= ticket {
                    return answer.clone();
                }
            }
            if answered.changed().await.is_err() {
                return Err("the sync task stopped".to_owned());
            }
        }
    }

    /// The requests, as the sync task waits for them.
    pub(crate) fn requests(&self) -> watch::Receiver<u64> {
        self.asked.subscribe()
    }

    /// The sync task's answer to every ticket up to `ticket`.
    pub(crate) fn answer(&self, ticket: u64, answer: PushAnswer) {
        self.answered.send_modify(|a| *a = (ticket, answer));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn an_asker_waits_for_an_answer_to_its_own_ticket() {
        let p = Arc::new(PushNow::default());
        let mut requests = p.requests();
        let asker = tokio::spawn({
            let p = p.clone();
            async move { p.push().await }
        });
        requests.changed().await.unwrap();
        let ticket = *requests.borrow_and_update();
        assert_eq!(ticket, 1);
        // An answer to an older ticket is not the asker's.
        p.answer(0, Ok(3));
        tokio::task::yield_now().await;
        assert!(!asker.is_finished());
        p.answer(ticket, Ok(7));
        assert_eq!(asker.await.unwrap(), Ok(7));
    }
}
