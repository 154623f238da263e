//! A one-shot future completed by a wgpu callback (buffer mapped, submitted work done). In the browser
//! the callback fires from the event loop while the future is awaited; natively `Device::poll` runs it
//! before the future is first polled.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

struct Slot<T> {
    value: Option<T>,
    waker: Option<Waker>,
}

/// The receiving half: resolves to the value the callback sent.
pub(crate) struct Signal<T> {
    slot: Arc<Mutex<Slot<T>>>,
}

/// The sending half, moved into the callback.
pub(crate) struct Sender<T> {
    slot: Arc<Mutex<Slot<T>>>,
}

/// A connected sender and signal.
pub(crate) fn signal<T>() -> (Sender<T>, Signal<T>) {
    let slot = Arc::new(Mutex::new(Slot { value: None, waker: None }));
    (Sender { slot: slot.clone() }, Signal { slot })
}

impl<T> Sender<T> {
    /// Completes the signal and wakes whoever awaits it.
    pub(crate) fn send(self, value: T) {
        let waker = match self.slot.lock() {
            Ok(mut s) => {
                s.value = Some(value);
                s.waker.take()
            }
            Err(_) => None,
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        // Dropped unsent (the callback was discarded): wake the waiter so it sees no value instead of hanging.
        let waker = self.slot.lock().ok().and_then(|mut s| s.waker.take());
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Future for Signal<T> {
    type Output = Option<T>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let Ok(mut s) = self.slot.lock() else {
            // A poisoned lock means the callback panicked: report "no value" rather than hang.
            return Poll::Ready(None);
        };
        if let Some(v) = s.value.take() {
            return Poll::Ready(Some(v));
        }
        // Only the callback can still complete us; if it was dropped unsent, Arc count tells.
        if Arc::strong_count(&self.slot) == 1 {
            return Poll::Ready(None);
        }
        s.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}
