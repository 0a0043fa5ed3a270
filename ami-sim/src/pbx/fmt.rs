//! Small formatters: integers without allocation, Asterisk's `epoch.seq` Uniqueids, channel
//! name suffixes, bridge UUIDs, CDR dates. Pure functions of their arguments (never the
//! clock).

/// Decimal digits of `n` in `buf`, returned as a str (no allocation).
pub fn u64_str(buf: &mut [u8; 20], mut n: u64) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[i..]).expect("ascii digits")
}

/// `epoch.seq`, prefixed by `systemname-` when a SystemName is configured.
pub fn uniqueid(system_name: Option<&str>, secs: u64, seq: u64) -> String {
    match system_name {
        Some(s) => format!("{s}-{secs}.{seq}"),
        None => format!("{secs}.{seq}"),
    }
}

/// A channel driver's 8-hex-digit suffix (`PJSIP/101-0000002a`).
pub fn chan_name(tech_resource: &str, idx: u32) -> String {
    format!("{tech_resource}-{idx:08x}")
}

/// A version-4 UUID from 128 random bits, lower-case, 8-4-4-4-12.
pub fn uuid(hi: u64, lo: u64) -> String {
    let hi = (hi & 0xffff_ffff_ffff_0fff) | 0x0000_0000_0000_4000;
    let lo = (lo & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0xffff,
        lo >> 48,
        lo & 0xffff_ffff_ffff
    )
}

/// Civil date (year, month, day) of a day count since 1970-01-01 (H. Hinnant's algorithm).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = (z - era * 146_097) as u64;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe as i64 + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `YYYY-MM-DD HH:MM:SS` in UTC (the CDR and CEL time format of the captures).
pub fn datetime(secs: u64) -> String {
    let (d, t) = date_and_time(secs);
    format!("{d} {t}")
}

/// (`YYYY-MM-DD`, `HH:MM:SS`) in UTC.
pub fn date_and_time(secs: u64) -> (String, String) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    (
        format!("{y:04}-{m:02}-{d:02}"),
        format!("{:02}:{:02}:{:02}", rem / 3600, (rem / 60) % 60, rem % 60),
    )
}

/// `HH:MM:SS` of a duration (CoreShowChannel `Duration`).
pub fn hms(secs: u64) -> String {
    format!(
        "{:02}:{:02}:{:02}",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let mut b = [0u8; 20];
        assert_eq!(u64_str(&mut b, 0), "0");
        assert_eq!(u64_str(&mut b, 1795249644), "1795249644");
        assert_eq!(u64_str(&mut b, u64::MAX), "18446744073709551615");
        assert_eq!(uniqueid(None, 1795249644, 383), "1795249644.383");
        assert_eq!(
            uniqueid(Some("kitpbx"), 1795249032, 0),
            "kitpbx-1795249032.0"
        );
        assert_eq!(chan_name("PJSIP/101", 0x2a), "PJSIP/101-0000002a");
        let u = uuid(0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210);
        assert_eq!(u, "01234567-89ab-4def-bedc-ba9876543210");
        assert_eq!(datetime(1795249644), "2026-11-21 08:27:24");
        assert_eq!(
            date_and_time(0),
            ("1970-01-01".to_string(), "00:00:00".to_string())
        );
        assert_eq!(hms(17), "00:00:17");
        assert_eq!(hms(3725), "01:02:05");
    }
}
