//! The broker's wall clock: milliseconds since the Unix epoch, the unit of Kafka timestamps.
//! One function so every layer (storage retention, groups, handlers) reads time the same way.

/// Now, in milliseconds since the epoch (0 if the system clock is before it).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
