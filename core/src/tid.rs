//! Transaction ids and ZODB's `TimeStamp`.
//!
//! A tid is 8 big-endian bytes that encode a UTC time: the first 4 bytes are
//! minutes since 1900-01-01 00:00 with every month counted as 31 days, the last
//! 4 are the seconds within that minute scaled by 2^32/60 and truncated. The
//! arithmetic below follows persistent's `_timestamp.c` operation for
//! operation (including its floating-point order), because tools print these
//! values and the output must match Python's to the last digit.

use std::fmt;
use std::str::FromStr;

/// A transaction id (also the serial of every object revision it wrote).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tid(pub u64);

impl Tid {
    /// `z64`: "no transaction"; never valid as a commit or pack time.
    pub const ZERO: Tid = Tid(0);
    /// ZODB's `maxtid`: the largest tid a storage may hold.
    pub const MAX: Tid = Tid(0x7fff_ffff_ffff_ffff);

    /// The tid encoded by 8 big-endian bytes.
    pub const fn from_bytes(b: [u8; 8]) -> Tid {
        Tid(u64::from_be_bytes(b))
    }

    /// The tid encoded by exactly 8 bytes, or `None` for any other length.
    pub fn from_slice(b: &[u8]) -> Option<Tid> {
        Some(Tid::from_bytes(b.try_into().ok()?))
    }

    /// The 8 big-endian bytes ZODB writes.
    pub const fn to_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    /// The next tid in byte order; `loadBefore(oid, at.next())` reads "as of `at`".
    pub const fn next(self) -> Tid {
        Tid(self.0.saturating_add(1))
    }

    /// The previous tid in byte order.
    pub const fn prev(self) -> Tid {
        Tid(self.0.saturating_sub(1))
    }

    /// The time this tid encodes.
    pub const fn timestamp(self) -> TimeStamp {
        TimeStamp(self.to_bytes())
    }
}

/// 16 lowercase hex digits, as every ZODB tool prints tids.
impl fmt::Display for Tid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Error for a tid given as text that is not exactly 16 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid tid {text:?}: expected 16 hex digits")]
pub struct ParseTidError {
    /// The text that was given.
    pub text: String,
}

/// Exactly 16 hex digits, as zodbtools' `parse_tid` requires for a raw tid.
impl FromStr for Tid {
    type Err = ParseTidError;
    fn from_str(s: &str) -> Result<Tid, ParseTidError> {
        let err = || ParseTidError { text: s.to_owned() };
        if s.len() != 16 || !s.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(err());
        }
        u64::from_str_radix(s, 16).map(Tid).map_err(|_| err())
    }
}

const BASE_YEAR: i64 = 1900;
const MINUTES_PER_DAY: u32 = 1440;
const MINUTES_PER_MONTH: u32 = 31 * MINUTES_PER_DAY;
const MINUTES_PER_YEAR: u32 = 12 * MINUTES_PER_MONTH;
/// Seconds per unit of the low word; computed with the same divisions as C.
const SECOND_BIAS: f64 = 60.0 / 65536.0 / 65536.0;

const MONTH_LEN: [[u32; 12]; 2] = [
    [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31],
    [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31],
];
const JOFF: [[i64; 12]; 2] = [
    [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334],
    [0, 31, 60, 91, 121, 152, 182, 213, 244, 274, 305, 335],
];

fn leap(year: i64) -> usize {
    usize::from(year % 4 == 0 && (year % 100 != 0 || year % 400 == 0))
}

/// Error for a calendar date outside what a TimeStamp can encode.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TimeStampError {
    /// Years before 1900 cannot be encoded.
    #[error("year must be at least 1900: {0}")]
    Year(i64),
    /// Month not in 1..=12.
    #[error("month must be between 1 and 12: {0}")]
    Month(u32),
    /// Day not in the month.
    #[error("day must be between 1 and {max}: {day}")]
    Day {
        /// The day given.
        day: u32,
        /// Days in that month.
        max: u32,
    },
    /// Hour not in 0..=23.
    #[error("hour must be between 0 and 23: {0}")]
    Hour(u32),
    /// Minute not in 0..=59.
    #[error("minute must be between 0 and 59: {0}")]
    Minute(u32),
    /// The minute count does not fit the 4-byte high word.
    #[error("year {0} is past what a TimeStamp can encode")]
    Overflow(i64),
}

/// ZODB's `persistent.TimeStamp`: a tid viewed as a UTC date and time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimeStamp(pub [u8; 8]);

impl TimeStamp {
    /// Builds a TimeStamp from UTC calendar fields, as `TimeStamp(y, m, d, h, mi, sec)`.
    /// Seconds may be any non-negative value (C does not range-check them);
    /// they are scaled and truncated into the low word.
    pub fn from_date(
        year: i64,
        month: u32,
        day: u32,
        hour: u32,
        minute: u32,
        sec: f64,
    ) -> Result<TimeStamp, TimeStampError> {
        if year < BASE_YEAR {
            return Err(TimeStampError::Year(year));
        }
        if !(1..=12).contains(&month) {
            return Err(TimeStampError::Month(month));
        }
        let max = MONTH_LEN[leap(year)][month as usize - 1];
        if day < 1 || day > max {
            return Err(TimeStampError::Day { day, max });
        }
        if hour > 23 {
            return Err(TimeStampError::Hour(hour));
        }
        if minute > 59 {
            return Err(TimeStampError::Minute(minute));
        }
        let months = (year - BASE_YEAR) * 12 + i64::from(month - 1);
        let minutes =
            ((months * 31 + i64::from(day - 1)) * 24 + i64::from(hour)) * 60 + i64::from(minute);
        let hi = u32::try_from(minutes).map_err(|_| TimeStampError::Overflow(year))?;
        // C converts with `(unsigned int)(sec / bias)`: truncation toward zero.
        let lo = (sec / SECOND_BIAS) as u32;
        let mut raw = [0u8; 8];
        raw[..4].copy_from_slice(&hi.to_be_bytes());
        raw[4..].copy_from_slice(&lo.to_be_bytes());
        Ok(TimeStamp(raw))
    }

    /// The TimeStamp ZODB derives from a Unix time `t`:
    /// `TimeStamp(*time.gmtime(t)[:5] + (t % 60,))` (used by `newTid` and `pack`).
    pub fn from_unix(t: f64) -> Result<TimeStamp, TimeStampError> {
        let secs = t.floor() as i64;
        let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
        let sod = secs.rem_euclid(86_400);
        let frac = t.rem_euclid(60.0);
        TimeStamp::from_date(y, m, d, (sod / 3600) as u32, (sod % 3600 / 60) as u32, frac)
    }

    /// The tid with these bytes.
    pub const fn tid(self) -> Tid {
        Tid::from_bytes(self.0)
    }

    fn hi(self) -> u32 {
        u32::from_be_bytes([self.0[0], self.0[1], self.0[2], self.0[3]])
    }

    fn lo(self) -> u32 {
        u32::from_be_bytes([self.0[4], self.0[5], self.0[6], self.0[7]])
    }

    /// (year, month 1-12, day 1-31, minute of day), as C's `TimeStamp_unpack`.
    fn unpack(self) -> (i64, u32, u32, u32) {
        let m = self.hi();
        (
            i64::from(m / MINUTES_PER_YEAR) + BASE_YEAR,
            (m % MINUTES_PER_YEAR) / MINUTES_PER_MONTH + 1,
            (m % MINUTES_PER_MONTH) / MINUTES_PER_DAY + 1,
            m % MINUTES_PER_DAY,
        )
    }

    /// Calendar year.
    pub fn year(self) -> i64 {
        self.unpack().0
    }
    /// Month, 1-12.
    pub fn month(self) -> u32 {
        self.unpack().1
    }
    /// Day of month, 1-31.
    pub fn day(self) -> u32 {
        self.unpack().2
    }
    /// Hour, 0-23.
    pub fn hour(self) -> u32 {
        self.unpack().3 / 60
    }
    /// Minute, 0-59.
    pub fn minute(self) -> u32 {
        self.unpack().3 % 60
    }
    /// Seconds within the minute, as a float (`TimeStamp.second()`).
    pub fn second(self) -> f64 {
        SECOND_BIAS * f64::from(self.lo())
    }

    /// Seconds since the Unix epoch (`TimeStamp.timeTime()`), with C's
    /// evaluation order so the float is bit-identical.
    pub fn time_time(self) -> f64 {
        let (y, m, d, mi) = self.unpack();
        let gmoff = abst(1970, 0, 0, 0, 0);
        abst(y, m as usize - 1, i64::from(d) - 1, i64::from(mi), 0) + self.second() - gmoff
    }

    /// The smallest TimeStamp that is later than both `self` and `other`
    /// (`TimeStamp.laterThan`): `self` if it is already later, else `other`
    /// plus one in the low word, carrying into a real calendar minute.
    pub fn later_than(self, other: TimeStamp) -> TimeStamp {
        if self.0 > other.0 {
            return self;
        }
        let mut new = other.0;
        for i in (4..8).rev() {
            if new[i] == 255 {
                new[i] = 0;
            } else {
                new[i] += 1;
                return TimeStamp(new);
            }
        }
        let (mut y, mut m, mut d, mut mi) = other.unpack();
        if mi >= 1439 {
            mi = 0;
            if d == MONTH_LEN[leap(y)][m as usize - 1] {
                d = 1;
                if m == 12 {
                    m = 1;
                    y += 1;
                } else {
                    m += 1;
                }
            } else {
                d += 1;
            }
        } else {
            mi += 1;
        }
        // The date came from a valid TimeStamp plus one minute, so it is valid
        // unless the high word overflows, which saturates at the last minute.
        TimeStamp::from_date(y, m, d, mi / 60, mi % 60, 0.0).unwrap_or(TimeStamp([0xff; 8]))
    }
}

/// `YYYY-MM-DD HH:MM:SS.ffffff`, as `str(TimeStamp)` (C's `%09.6f` seconds).
impl fmt::Display for TimeStamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d, mi) = self.unpack();
        write!(
            f,
            "{:04}-{:02}-{:02} {:02}:{:02}:{:09.6}",
            y,
            m,
            d,
            mi / 60,
            mi % 60,
            self.second()
        )
    }
}

/// Days from 1900-01-01 to Jan 1 of `y`, as C's `TimeStamp_yad` (C int division).
fn yad(y: i64) -> f64 {
    let mut y = y - BASE_YEAR;
    let d = (y - 1) * 365;
    let s;
    if y > 0 {
        s = 1.0;
        y -= 1;
    } else {
        s = -1.0;
        y = -y;
    }
    d as f64 + s * ((y / 4 - y / 100 + (y + 300) / 400) as f64)
}

fn abst(y: i64, mo: usize, d: i64, m: i64, s: i64) -> f64 {
    (yad(y) + JOFF[leap(y)][mo] as f64 + d as f64) * 86400.0 + (m * 60) as f64 + s as f64
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(hex: &str) -> TimeStamp {
        hex.parse::<Tid>().unwrap().timestamp()
    }

    #[test]
    fn encodes_like_persistent() {
        // Values checked against persistent 6.9's C TimeStamp (spec §9).
        let t = TimeStamp::from_date(2024, 1, 2, 3, 4, 5.5).unwrap();
        assert_eq!(t.tid().to_string(), "03f5945817777777");
        assert_eq!(
            ts("0285cbac258bf266").to_string(),
            "1979-01-03 21:00:08.800000"
        );
    }

    #[test]
    fn later_than_carries_into_real_calendar() {
        assert_eq!(
            ts("03ed67d8ffffffff")
                .later_than(ts("03ed67d8ffffffff"))
                .tid()
                .to_string(),
            "03ed67d900000000"
        );
        // 2023-02-28 23:59 -> 2023-03-01 00:00, not the nonexistent Feb 29.
        assert_eq!(
            ts("03eead5fffffffff")
                .later_than(ts("03eead5fffffffff"))
                .tid()
                .to_string(),
            "03eebe4000000000"
        );
        let a = ts("0000000100000005");
        let b = ts("0000000200000000");
        assert_eq!(b.later_than(a), b);
        assert_eq!(a.later_than(b).tid(), Tid(0x0000_0002_0000_0001));
    }

    #[test]
    fn from_unix_matches_gmtime() {
        // 2009-08-30T19:20:00Z, the zodbtools reference time.
        assert_eq!(
            TimeStamp::from_unix(1_251_660_000.0)
                .unwrap()
                .tid()
                .to_string(),
            "03805ec800000000"
        );
        let t = TimeStamp::from_unix(1_251_660_000.0).unwrap();
        assert_eq!(t.time_time(), 1_251_660_000.0);
        assert_eq!(
            (t.year(), t.month(), t.day(), t.hour(), t.minute()),
            (2009, 8, 30, 19, 20)
        );
    }

    #[test]
    fn rejects_bad_dates() {
        assert_eq!(
            TimeStamp::from_date(1899, 1, 1, 0, 0, 0.0),
            Err(TimeStampError::Year(1899))
        );
        assert_eq!(
            TimeStamp::from_date(2023, 2, 29, 0, 0, 0.0),
            Err(TimeStampError::Day { day: 29, max: 28 })
        );
    }

    #[test]
    fn tid_text() {
        assert_eq!(
            "0285cbac258bf266".parse::<Tid>().unwrap(),
            Tid(0x0285cbac258bf266)
        );
        assert!("0285cbac258bf26".parse::<Tid>().is_err());
        assert!("0285cbac258bf26g".parse::<Tid>().is_err());
    }
}
