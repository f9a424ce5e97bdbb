//! XEP-0082 date-times.

use super::*;

#[test]
fn xep0082_timestamps() {
    assert_eq!(xep0082(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(xep0082(951_782_400_123), "2000-02-29T00:00:00.123Z");
    assert_eq!(xep0082(1_700_000_000_000), "2023-11-14T22:13:20.000Z");
}

#[test]
fn xep0082_date_times_parse_and_round_trip() {
    for ms in [0, 1_700_000_000_123, 951_782_400_000, 4_102_444_799_999] {
        assert_eq!(parse_xep0082(&xep0082(ms)), Some(ms));
    }
    assert_eq!(
        parse_xep0082("2024-02-29T12:00:00+02:00"),
        parse_xep0082("2024-02-29T10:00:00Z")
    );
    assert_eq!(
        parse_xep0082("2024-02-29T10:00:00.5Z"),
        parse_xep0082("2024-02-29T10:00:00Z").map(|m| m + 500)
    );
    for bad in [
        "",
        "2024-02-29",
        "2024-13-01T00:00:00Z",
        "2024-02-29T10:00:00",
        "x024-02-29T10:00:00Z",
        "2024-02-29T10:00:00.Z",
        "2024-02-29T10:00:00+0\u{e9}00",
        "2024-02-29T10:00:00\u{e9}",
        "2024-02-29\u{e9}10:00:00Z",
        "\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}",
    ] {
        assert_eq!(parse_xep0082(bad), None, "{bad}");
    }
}

/// XEP-0082 dates at the edges: impossible dates and offsets are refused, the largest
/// four-digit year works, nothing panics or wraps.
#[test]
fn xep0082_dates_at_the_edges() {
    for bad in [
        "0000-00-00T00:00:00Z",
        "0000-01-01T00:00:00Z",
        "99999-01-01T00:00:00Z",
        "+9999-01-01T00:00:00Z",
        "-001-01-01T00:00:00Z",
        "2024-13-01T00:00:00Z",
        "2024-00-10T00:00:00Z",
        "2024-01-00T00:00:00Z",
        "2024-01-32T00:00:00Z",
        "2023-02-29T00:00:00Z",
        "2100-02-29T00:00:00Z",
        "2024-04-31T00:00:00Z",
        "2024-01-01T24:00:00Z",
        "2024-01-01T00:60:00Z",
        "2024-01-01T00:00:61Z",
        "2024-01-01T00:00:00+24:00",
        "2024-01-01T00:00:00+99:99",
        "2024-01-01T00:00:00-00:60",
        "1970-01-01T00:00:00+00:01",
        "1969-12-31T23:59:59Z",
        "9999-99-99T99:99:99.999999999999999999999Z",
    ] {
        assert_eq!(parse_xep0082(bad), None, "{bad}");
    }
    assert_eq!(
        parse_xep0082("2024-02-29T00:00:00Z"),
        Some(1_709_164_800_000)
    );
    assert_eq!(parse_xep0082("2000-02-29T00:00:00Z"), Some(951_782_400_000));
    assert_eq!(parse_xep0082("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(parse_xep0082("1970-01-01T00:00:00-23:59"), Some(86_340_000));
    let end = parse_xep0082("9999-12-31T23:59:59.999Z").expect("year 9999");
    assert_eq!(end, 253_402_300_799_999);
    assert_eq!(xep0082(end), "9999-12-31T23:59:59.999Z");
    // Many fraction digits: the first three count.
    assert_eq!(
        parse_xep0082("2024-02-29T00:00:00.1239999999999999999999999Z"),
        Some(1_709_164_800_123)
    );
    // Formatting never panics, whatever the clock says.
    for ms in [0, u64::MAX / 2, u64::MAX] {
        assert!(xep0082(ms).ends_with('Z'));
    }
}
