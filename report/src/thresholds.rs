//! Alert levels (§13): how many adds make a period green, orange or red,
//! and from which level a period is worth a notification.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Green,
    Orange,
    Red,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Green => "green",
            Level::Orange => "orange",
            Level::Red => "red",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("expected green, orange or red")]
pub struct LevelError;

/// Exactly the lowercase names, as serde read them in the reference.
impl FromStr for Level {
    type Err = LevelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "green" => Ok(Level::Green),
            "orange" => Ok(Level::Orange),
            "red" => Ok(Level::Red),
            _ => Err(LevelError),
        }
    }
}

/// `[thresholds]`; the config guarantees `red > orange`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub orange: u64,
    pub red: u64,
    /// `threshold_min`: the lowest level that is notified.
    pub min: Level,
}

impl Thresholds {
    /// The level of a period with `total` adds.
    pub fn level(&self, total: u64) -> Level {
        if total >= self.red {
            Level::Red
        } else if total >= self.orange {
            Level::Orange
        } else {
            Level::Green
        }
    }

    /// An empty period is never notified, whatever `threshold_min` says
    /// (the reference's behaviour, against its docs).
    pub fn should_notify(&self, total: u64) -> bool {
        total > 0 && self.level(total) >= self.min
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thresholds(min: Level) -> Thresholds {
        Thresholds {
            orange: 10,
            red: 100,
            min,
        }
    }

    #[test]
    fn levels_change_at_the_thresholds() {
        let t = thresholds(Level::Green);
        assert_eq!(t.level(0), Level::Green);
        assert_eq!(t.level(9), Level::Green);
        assert_eq!(t.level(10), Level::Orange);
        assert_eq!(t.level(99), Level::Orange);
        assert_eq!(t.level(100), Level::Red);
    }

    #[test]
    fn minimum_level_and_never_empty() {
        let green = thresholds(Level::Green);
        assert!(!green.should_notify(0));
        assert!(green.should_notify(1));
        let orange = thresholds(Level::Orange);
        assert!(!orange.should_notify(9));
        assert!(orange.should_notify(10));
        let red = thresholds(Level::Red);
        assert!(!red.should_notify(99));
        assert!(red.should_notify(100));
        let zero = Thresholds {
            orange: 0,
            red: 1,
            min: Level::Orange,
        };
        assert!(!zero.should_notify(0));
    }

    #[test]
    fn parses_lowercase_names_only() {
        assert_eq!("red".parse::<Level>(), Ok(Level::Red));
        assert_eq!("Red".parse::<Level>(), Err(LevelError));
    }
}
