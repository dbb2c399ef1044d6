//! The kernel's own count of an event by one field (or several, with a hist
//! trigger: [`FieldCount::read_keys`]), to compare pagefail's
//! counts against over the same window, in a private tracefs instance (other
//! users of the event are unaffected):
//! - a hist trigger `hist:keys=<field>` where the kernel has them
//!   (`CONFIG_HIST_TRIGGERS`): exact, no buffer;
//! - else the event itself, enabled in the instance under the same filter,
//!   its lines counted by the field's printed value; the buffer's overruns
//!   are reported, so a short count is never silent.

use std::{
    collections::BTreeMap,
    fs,
    io::Write as _,
    path::{Path, PathBuf},
};

/// How the count is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Hist,
    Buffer,
}

/// An event counted by one field in its own tracefs instance; the trigger,
/// the event and the instance are removed on drop.
pub struct FieldCount {
    instance: PathBuf,
    dir: PathBuf,
    field: String,
    hist_spec: Option<String>,
}

impl FieldCount {
    /// Create the instance `name` and start counting `event` (`skb/kfree_skb`)
    /// by `field`, only events that pass `filter`.
    ///
    /// # Errors
    /// When the instance exists already or neither a trigger nor the event
    /// can be set.
    pub fn start(
        tracefs: &Path,
        name: &str,
        event: &str,
        field: &str,
        filter: &str,
    ) -> std::io::Result<Self> {
        let instance = tracefs.join("instances").join(name);
        fs::create_dir(&instance)?;
        let dir = instance.join("events").join(event);
        let mut this = Self {
            instance,
            dir,
            field: field.to_owned(),
            hist_spec: None,
        };
        let spec = format!("hist:keys={field}:vals=hitcount:size=4096 if {filter}");
        let hist = fs::OpenOptions::new()
            .append(true)
            .open(this.dir.join("trigger"))
            .and_then(|mut f| f.write_all(spec.as_bytes()));
        if hist.is_ok() {
            this.hist_spec = Some(spec);
        } else {
            fs::write(this.instance.join("buffer_size_kb"), "8192")?;
            fs::write(this.dir.join("filter"), filter)?;
            fs::write(this.dir.join("enable"), "1")?;
        }
        Ok(this)
    }

    /// Which way the kernel counts here.
    #[must_use]
    pub fn method(&self) -> Method {
        if self.hist_spec.is_some() {
            Method::Hist
        } else {
            Method::Buffer
        }
    }

    /// `hist` or `buffer`.
    #[must_use]
    pub fn method_name(&self) -> &'static str {
        match self.method() {
            Method::Hist => "hist",
            Method::Buffer => "buffer",
        }
    }

    /// Stop counting new events (the counts stay readable).
    pub fn stop(&self) {
        if self.hist_spec.is_some() {
            // Pausing keeps the table: `:pause` on the same trigger.
            if let Some(spec) = &self.hist_spec {
                let (head, filter) = spec.split_once(" if ").unwrap_or((spec, ""));
                let pause = format!("{head}:pause if {filter}");
                if let Ok(mut f) = fs::OpenOptions::new()
                    .append(true)
                    .open(self.dir.join("trigger"))
                {
                    let _ = f.write_all(pause.as_bytes());
                }
            }
        } else {
            let _ = fs::write(self.dir.join("enable"), "0");
        }
    }

    /// Hits per field value, and the events the kernel did not count (hist
    /// table full, or buffer overruns). Values printed as names (the
    /// buffer's `__print_symbolic` output) are turned into numbers by
    /// `number`; a name it does not know is an error.
    ///
    /// # Errors
    /// When the counts cannot be read.
    pub fn read(
        &self,
        number: &dyn Fn(&str) -> Option<u64>,
    ) -> std::io::Result<(BTreeMap<u64, u64>, u64)> {
        if self.hist_spec.is_some() {
            self.read_hist()
        } else {
            self.read_buffer(number)
        }
    }

    fn read_hist(&self) -> std::io::Result<(BTreeMap<u64, u64>, u64)> {
        let (by_keys, dropped) = self.read_keys()?;
        let hits = by_keys
            .into_iter()
            .filter_map(|(k, n)| Some((*k.first()?, n)))
            .collect();
        Ok((hits, dropped))
    }

    /// Hits per value of every key (`field` may name several, `order,gfp_flags`),
    /// in the order the keys were named, and the events the hist table had no
    /// room for (its `Dropped:` line).
    ///
    /// # Errors
    /// When the kernel keeps no hist trigger here ([`Method::Buffer`]) or the
    /// table cannot be read.
    pub fn read_keys(&self) -> std::io::Result<(BTreeMap<Vec<u64>, u64>, u64)> {
        if self.hist_spec.is_none() {
            return Err(std::io::Error::other(
                "this kernel has no hist triggers (CONFIG_HIST_TRIGGERS)",
            ));
        }
        Ok(parse_hist(&fs::read_to_string(self.dir.join("hist"))?))
    }

    fn read_buffer(
        &self,
        number: &dyn Fn(&str) -> Option<u64>,
    ) -> std::io::Result<(BTreeMap<u64, u64>, u64)> {
        let text = fs::read_to_string(self.instance.join("trace"))?;
        let marker = format!("{}: ", self.field);
        let mut hits = BTreeMap::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((_, value)) = line.rsplit_once(&marker) else {
                continue;
            };
            let value = value.split_whitespace().next().unwrap_or("");
            let n = value
                .parse::<u64>()
                .ok()
                .or_else(|| number(value))
                .ok_or_else(|| {
                    std::io::Error::other(format!("unknown {} `{value}`", self.field))
                })?;
            *hits.entry(n).or_default() += 1;
        }
        // Unreadable statistics are an error, never a silent 0.
        let mut overruns = 0;
        for cpu in fs::read_dir(self.instance.join("per_cpu"))? {
            let stats = fs::read_to_string(cpu?.path().join("stats"))?;
            overruns += stats
                .lines()
                .filter_map(|l| l.strip_prefix("overrun:"))
                .filter_map(|v| v.trim().parse::<u64>().ok())
                .sum::<u64>();
        }
        Ok((hits, overruns))
    }
}

impl Drop for FieldCount {
    fn drop(&mut self) {
        if let Some(spec) = &self.hist_spec {
            if let Ok(mut f) = fs::OpenOptions::new()
                .append(true)
                .open(self.dir.join("trigger"))
            {
                let _ = f.write_all(format!("!{spec}").as_bytes());
            }
        } else {
            let _ = fs::write(self.dir.join("enable"), "0");
        }
        let _ = fs::remove_dir(&self.instance);
    }
}

/// A hist file's entries (`{ order:          3, gfp_flags:     338112 }
/// hitcount:        500`) and its `Dropped:` count.
fn parse_hist(text: &str) -> (BTreeMap<Vec<u64>, u64>, u64) {
    let mut hits = BTreeMap::new();
    let mut dropped = 0;
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("Dropped:") {
            dropped = rest.trim().parse().unwrap_or(0);
        }
        let Some(body) = line.strip_prefix('{') else {
            continue;
        };
        let Some((keys, count)) = body.split_once('}') else {
            continue;
        };
        let values: Option<Vec<u64>> = keys
            .split(',')
            .map(|kv| kv.split_once(':')?.1.trim().parse::<u64>().ok())
            .collect();
        let n = count
            .trim()
            .strip_prefix("hitcount:")
            .and_then(|v| v.trim().parse::<u64>().ok());
        if let (Some(v), Some(n)) = (values, n) {
            *hits.entry(v).or_default() += n;
        }
    }
    (hits, dropped)
}

#[cfg(test)]
mod tests {
    use super::parse_hist;

    #[test]
    fn hist_entries_of_one_and_two_keys_are_read() {
        let text = "# event histogram\n#\n\
            { order:          3, gfp_flags:     338112 } hitcount:        500\n\
            { order:          1, gfp_flags:       2848 } hitcount:          7\n\
            \nTotals:\n    Hits: 507\n    Entries: 2\n    Dropped: 4\n";
        let (hits, dropped) = parse_hist(text);
        assert_eq!(dropped, 4);
        assert_eq!(hits.len(), 2);
        assert_eq!(hits[&vec![3, 338_112]], 500);
        assert_eq!(hits[&vec![1, 2848]], 7);
        let (one, _) = parse_hist("{ reason:          3 } hitcount:        500\n");
        assert_eq!(one[&vec![3]], 500);
    }
}
