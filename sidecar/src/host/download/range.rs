//! HTTP range requests (RFC 9110 §14): the `Range` header a resumed download sends
//! and the `Content-Range` header of the answer.

/// The `Range` header value asking for everything from `offset` on; none from 0.
pub(super) fn range_header(offset: u64) -> Option<String> {
    (offset > 0).then(|| format!("bytes={offset}-"))
}

/// A parsed `Content-Range` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ContentRange {
    /// `bytes <first>-<last>/<total or *>` on a 206.
    Bytes { first: u64, last: u64, total: Option<u64> },
    /// `bytes */<total>` on a 416: the range asked for lies beyond `total`.
    Unsatisfied { total: u64 },
}

/// Parses a `Content-Range` value; `None` when it is malformed.
pub(super) fn parse_content_range(value: &str) -> Option<ContentRange> {
    let rest = value.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse::<u64>().ok()?),
    };
    if range.trim() == "*" {
        return total.map(|total| ContentRange::Unsatisfied { total });
    }
    let (first, last) = range.trim().split_once('-')?;
    let (first, last) = (first.trim().parse::<u64>().ok()?, last.trim().parse::<u64>().ok()?);
    if last < first || total.is_some_and(|t| last >= t) {
        return None;
    }
    Some(ContentRange::Bytes { first, last, total })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_header_only_when_resuming() {
        assert_eq!(range_header(0), None);
        assert_eq!(range_header(1234).as_deref(), Some("bytes=1234-"));
    }

    #[test]
    fn parses_content_ranges() {
        use ContentRange::*;
        let cases: &[(&str, Option<ContentRange>)] = &[
            ("bytes 100-999/1000", Some(Bytes { first: 100, last: 999, total: Some(1000) })),
            ("bytes 0-0/1", Some(Bytes { first: 0, last: 0, total: Some(1) })),
            ("bytes 5-9/*", Some(Bytes { first: 5, last: 9, total: None })),
            (" bytes  100-999/1000 ", Some(Bytes { first: 100, last: 999, total: Some(1000) })),
            ("bytes */1000", Some(Unsatisfied { total: 1000 })),
            ("bytes */*", None),
            ("bytes 9-5/10", None),
            ("bytes 0-10/10", None),
            ("items 0-1/2", None),
            ("bytes 0-x/10", None),
            ("bytes 0-9", None),
            ("", None),
        ];
        for (value, want) in cases {
            assert_eq!(parse_content_range(value), *want, "{value:?}");
        }
    }
}
