//! Log lines in the format of ZEO's `<eventlog>` files.
//!
//! When the configuration names a log file, operators (and ZEO's own
//! tests) read it as a `runzeo` log: ZConfig's default format
//! `------\n%(asctime)s %(levelname)s %(name)s %(message)s`, Python's level
//! names (`CRITICAL` for events flagged `critical = true`, `WARNING`,
//! `BLATHER` for trace) and ZEO's logger names for our modules. The other
//! fields of an event follow the message as `key=value`, so nothing
//! structured is lost. On stderr the usual `tracing` format is kept.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The formatter; see the [module docs](self).
#[derive(Debug, Default, Clone, Copy)]
pub struct ZeoLogFormat;

#[derive(Default)]
struct Fields {
    message: String,
    critical: bool,
    rest: String,
}

impl Visit for Fields {
    fn record_bool(&mut self, field: &Field, value: bool) {
        if field.name() == "critical" {
            self.critical = value;
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.rest.push_str(&format!(" {}={value}", field.name()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.message.push_str(&format!("{value:?}"));
        } else {
            self.rest.push_str(&format!(" {}={value:?}", field.name()));
        }
    }
}

/// ZEO's logger name for one of our modules.
fn logger_name(target: &str) -> &str {
    if target.starts_with("zeo_proto::server::txn")
        || target.starts_with("zeo_proto::server::storage")
    {
        "ZEO.StorageServer"
    } else if target.starts_with("zeo_proto::server") {
        "ZEO.asyncio.server"
    } else if target.starts_with("zodbrs::serve") {
        "ZEO.runzeo"
    } else {
        target
    }
}

impl<S, N> FormatEvent<S, N> for ZeoLogFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        let level = match *meta.level() {
            _ if fields.critical => "CRITICAL",
            Level::ERROR => "ERROR",
            Level::WARN => "WARNING",
            Level::INFO => "INFO",
            Level::DEBUG => "DEBUG",
            Level::TRACE => "BLATHER",
        };
        let now = jiff::ZonedDateTime::now().strftime("%Y-%m-%dT%H:%M:%S");
        writeln!(writer, "------")?;
        writeln!(
            writer,
            "{now} {level} {} {}{}",
            logger_name(meta.target()),
            fields.message,
            fields.rest
        )
    }
}
