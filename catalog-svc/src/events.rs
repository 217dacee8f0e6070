//! The catalog event bus, reduced to what a consumer needs: an ordered log of "product N changed"
//! records, each with an offset, that a consumer reads after the last offset it applied.
//!
//! Events carry no product data on purpose: a consumer reads the current product from the catalog
//! when it applies an event, so replaying an event twice, or applying an old one late, can never
//! install stale data. A consumer is therefore exactly as durable as the offset it stores. The
//! gateway's SQLite outbox (written in the same transaction as every product change) implements
//! [`EventSource`]; Kafka will (P5). [`MemoryEvents`] is the in-process one for tests.

use std::sync::Mutex;

/// What happened to a product.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    Created,
    Updated,
    Deleted,
    /// The product's availability changed (optional: the search feeder also follows the engine).
    Stock,
}

impl EventKind {
    /// The stored and transmitted name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::Updated => "updated",
            EventKind::Deleted => "deleted",
            EventKind::Stock => "stock",
        }
    }

    pub fn parse(text: &str) -> Option<EventKind> {
        match text {
            "created" => Some(EventKind::Created),
            "updated" => Some(EventKind::Updated),
            "deleted" => Some(EventKind::Deleted),
            "stock" => Some(EventKind::Stock),
            _ => None,
        }
    }
}

/// One record of the log. Offsets grow strictly; they may have gaps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CatalogEvent {
    pub offset: u64,
    pub product_id: u64,
    pub kind: EventKind,
}

/// Reading the log failed (the store is unreachable or holds something unreadable).
#[derive(Debug, thiserror::Error)]
#[error("catalog events: {0}")]
pub struct EventError(pub String);

/// An ordered, durable log of catalog events.
pub trait EventSource: Send {
    /// Up to `limit` events with an offset above `offset`, in offset order.
    fn read_after(&self, offset: u64, limit: usize) -> Result<Vec<CatalogEvent>, EventError>;
}

/// An in-process log for tests and single-process tools. Not durable.
#[derive(Debug, Default)]
pub struct MemoryEvents {
    events: Mutex<Vec<CatalogEvent>>,
}

impl MemoryEvents {
    /// Appends an event and returns its offset (the first is 1).
    pub fn publish(&self, product_id: u64, kind: EventKind) -> u64 {
        let mut events = self.events.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let offset = events.last().map_or(1, |last| last.offset + 1);
        events.push(CatalogEvent { offset, product_id, kind });
        offset
    }
}

impl EventSource for MemoryEvents {
    fn read_after(&self, offset: u64, limit: usize) -> Result<Vec<CatalogEvent>, EventError> {
        let events = self.events.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let start = events.partition_point(|event| event.offset <= offset);
        Ok(events[start..].iter().take(limit).copied().collect())
    }
}

impl<T: EventSource + Sync> EventSource for std::sync::Arc<T> {
    fn read_after(&self, offset: u64, limit: usize) -> Result<Vec<CatalogEvent>, EventError> {
        T::read_after(self, offset, limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_resumes_after_its_offset_in_pages() {
        let log = MemoryEvents::default();
        for product in 1..=5 {
            log.publish(product, EventKind::Created);
        }
        log.publish(3, EventKind::Deleted);
        let first = log.read_after(0, 4).unwrap();
        assert_eq!(first.iter().map(|e| e.product_id).collect::<Vec<_>>(), [1, 2, 3, 4]);
        let rest = log.read_after(first.last().unwrap().offset, 10).unwrap();
        assert_eq!(rest.len(), 2);
        assert_eq!(rest[1], CatalogEvent { offset: 6, product_id: 3, kind: EventKind::Deleted });
        assert!(log.read_after(6, 10).unwrap().is_empty());
    }

    #[test]
    fn kinds_round_trip_through_their_names() {
        for kind in [EventKind::Created, EventKind::Updated, EventKind::Deleted, EventKind::Stock] {
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(EventKind::parse("renamed"), None);
    }
}
