//! `clock`: the current time in an IANA time zone, or a given RFC 3339 time converted to one
//! (chrono-tz carries the time zone database).

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use serde_json::json;

use crate::{Tool, ToolContext, ToolError};

/// Tells the time in a time zone, now or at a given instant.
#[derive(Debug, Clone, Copy, Default)]
pub struct Clock;

#[async_trait]
impl Tool for Clock {
    fn name(&self) -> &str {
        "clock"
    }

    fn description(&self) -> &str {
        "Tells the current date and time in a time zone, or converts a given RFC 3339 time to a time zone. \
         Returns the local time, the UTC offset, the zone's abbreviation, the weekday and the Unix time."
    }

    fn parameters(&self) -> serde_json::Value {
        json!({
            "type": "object",
            "properties": {
                "time_zone": {
                    "type": "string",
                    "description": "IANA time zone name, e.g. \"Europe/Paris\" or \"America/New_York\"; default \"UTC\"",
                    "minLength": 1,
                    "maxLength": 64
                },
                "time": {
                    "type": "string",
                    "description": "An RFC 3339 time to convert, e.g. \"2024-03-10T12:00:00Z\"; default: now",
                    "minLength": 1,
                    "maxLength": 64
                }
            },
            "additionalProperties": false
        })
    }

    fn replay_safe(&self) -> bool {
        true
    }

    async fn execute(&self, arguments: serde_json::Value, _ctx: &ToolContext) -> Result<serde_json::Value, ToolError> {
        let zone_name = arguments.get("time_zone").and_then(serde_json::Value::as_str).unwrap_or("UTC");
        let zone: Tz = zone_name.parse().map_err(|_| {
            ToolError::new(format!(
                "unknown time zone `{zone_name}`: use an IANA name such as \"Europe/Paris\", \"America/New_York\" or \"UTC\""
            ))
        })?;
        let instant = match arguments.get("time").and_then(serde_json::Value::as_str) {
            None => Utc::now(),
            Some(text) => DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&Utc)).map_err(|e| {
                ToolError::new(format!(
                    "`{text}` is not an RFC 3339 time ({e}): write it like \"2024-03-10T12:00:00Z\" or \
                     \"2024-03-10T13:00:00+01:00\""
                ))
            })?,
        };
        let local = instant.with_timezone(&zone);
        Ok(json!({
            "time_zone": zone.name(),
            "time": local.to_rfc3339_opts(SecondsFormat::AutoSi, false),
            "utc_offset": local.format("%:z").to_string(),
            "abbreviation": local.format("%Z").to_string(),
            "weekday": local.format("%A").to_string(),
            "unix": instant.timestamp(),
        }))
    }
}
