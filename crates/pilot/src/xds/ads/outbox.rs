//! The response side of an ADS stream without a task or channel in between: the
//! connection's loop ([`super::connection::serve`]) runs *inside* the response
//! stream that tonic hands to HTTP/2 ([`Served`]), and queues its responses in
//! an [`Outbox`] that the same poll drains. Every response used to cross a
//! channel from the connection's own task to hyper's stream task (one wake-up
//! and one scheduling per message and proxy); now a push is generated, queued
//! and handed to HTTP/2 in one poll of one task.
//!
//! The invariant that makes this correct: the loop is only ever polled from
//! [`Served::poll_next`], and only when the queue is empty or to let it run
//! until it queues something. An [`Outbox::send`] that finds the queue full
//! returns `Pending` without registering a waker; that is safe because a full
//! queue makes `poll_next` return an item, and HTTP/2 polls again for the next
//! one, and again, until the queue is empty and the loop is resumed.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use futures::Stream;

type Queue<R> = Arc<Mutex<VecDeque<R>>>;

fn lock<R>(q: &Mutex<VecDeque<R>>) -> MutexGuard<'_, VecDeque<R>> {
    q.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Where a connection's loop puts its responses. Cheap to clone.
pub(crate) struct Outbox<R> {
    queue: Queue<R>,
    capacity: usize,
}

impl<R> Clone for Outbox<R> {
    fn clone(&self) -> Self {
        Outbox {
            queue: self.queue.clone(),
            capacity: self.capacity,
        }
    }
}

impl<R> Outbox<R> {
    /// Queues `item` if there is room; gives it back otherwise.
    pub fn try_send(&self, item: R) -> Result<(), R> {
        let mut queue = lock(&self.queue);
        if queue.len() < self.capacity {
            queue.push_back(item);
            Ok(())
        } else {
            Err(item)
        }
    }

    /// Queues `item`, waiting while `capacity` items are queued (the proxy
    /// reads slower than pilot generates).
    pub async fn send(&self, item: R) {
        let mut item = Some(item);
        std::future::poll_fn(|_| {
            let mut queue = lock(&self.queue);
            if queue.len() < self.capacity {
                if let Some(item) = item.take() {
                    queue.push_back(item);
                }
                Poll::Ready(())
            } else {
                // See the module doc: `Served::poll_next` drains the queue and
                // polls this again once it is empty.
                Poll::Pending
            }
        })
        .await
    }
}

/// The response stream of one ADS call: runs the connection's loop and yields
/// what it queued. Ends when the loop has returned and the queue is drained.
pub struct Served<R> {
    run: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    queue: Queue<R>,
}

impl<R: Send + 'static> Served<R> {
    /// A stream running `loop_of(outbox)`, holding at most `capacity` queued
    /// responses.
    pub(crate) fn new<F, Fut>(capacity: usize, loop_of: F) -> Self
    where
        F: FnOnce(Outbox<R>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let queue: Queue<R> = Arc::new(Mutex::new(VecDeque::new()));
        let outbox = Outbox {
            queue: queue.clone(),
            capacity: capacity.max(1),
        };
        Served {
            run: Some(Box::pin(loop_of(outbox))),
            queue,
        }
    }
}

impl<R> Stream for Served<R> {
    type Item = R;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<R>> {
        if let Some(item) = lock(&self.queue).pop_front() {
            return Poll::Ready(Some(item));
        }
        if let Some(run) = self.run.as_mut()
            && run.as_mut().poll(cx).is_ready()
        {
            self.run = None;
        }
        match lock(&self.queue).pop_front() {
            Some(item) => Poll::Ready(Some(item)),
            None if self.run.is_none() => Poll::Ready(None),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn yields_what_the_loop_queues_in_order_then_ends() {
        let served = Served::new(2, |out: Outbox<u32>| async move {
            for i in 0..5 {
                out.send(i).await;
            }
        });
        assert_eq!(served.collect::<Vec<_>>().await, vec![0, 1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn a_full_outbox_holds_the_loop_until_the_reader_takes_an_item() {
        let (step_tx, mut step_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut served = Served::new(1, move |out: Outbox<u32>| async move {
            for i in 0..3 {
                out.send(i).await;
                let _ = step_tx.send(i);
            }
        });
        assert_eq!(served.next().await, Some(0));
        // The loop went on after 0 was queued, and stopped at the full queue.
        assert_eq!(step_rx.try_recv().ok(), Some(0));
        assert_eq!(served.next().await, Some(1));
        assert_eq!(served.next().await, Some(2));
        assert_eq!(served.next().await, None);
        let rest: Vec<u32> = std::iter::from_fn(|| step_rx.try_recv().ok()).collect();
        assert_eq!(rest, vec![1, 2]);
    }

    #[tokio::test]
    async fn the_loop_waits_on_its_own_inputs_between_items() {
        let (in_tx, mut in_rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
        let mut served = Served::new(4, move |out: Outbox<u32>| async move {
            while let Some(v) = in_rx.recv().await {
                out.send(v * 10).await;
            }
        });
        in_tx.send(1).expect("open");
        assert_eq!(served.next().await, Some(10));
        let pending = tokio::time::timeout(std::time::Duration::from_millis(50), served.next());
        assert!(pending.await.is_err(), "nothing queued yet");
        in_tx.send(2).expect("open");
        assert_eq!(served.next().await, Some(20));
        drop(in_tx);
        assert_eq!(served.next().await, None);
    }
}
