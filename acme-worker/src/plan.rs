//! The renewal decision for one certificate, as a pure function of what is known at one
//! moment: whether it is due ([`Due`]), the CA's renewal window (ARI), a renewal forced from
//! the command line, the certificate's back-off after failures, and the order throttle. The
//! worker gathers those facts (files, the CA) and carries out the [`Plan`]; this module does
//! no I/O, so every rule is tested here without a CA.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::wanted::Due;

/// Longest time between passes, even when nothing is due.
pub const PASS_EVERY: Duration = Duration::from_secs(3600);

/// Longest wait after failures (the first is `acme.retry-after`, doubling per failure).
pub const BACKOFF_MAX: Duration = Duration::from_secs(3600);

/// Shortest time before the CA's renewal window is asked about again.
const ARI_RECHECK_MIN: Duration = Duration::from_secs(60);

/// The window `acme.max-orders-per-minute` counts in.
const MINUTE: Duration = Duration::from_secs(60);

/// What is known of one wanted certificate when a pass looks at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    /// What the certificate in certs-dir says.
    pub due: Due,
    /// The moment the CA's renewal window suggests (Unix time) and when to ask again; `None`
    /// when the CA does not say.
    pub ari: Option<(i64, Duration)>,
    /// `--force-renewal` is in effect for this pass.
    pub forced: bool,
    /// How long the back-off after this certificate's last failure still runs (zero: none).
    pub backoff_left: Duration,
    /// Now, as Unix time.
    pub now: i64,
}

/// What to do about one certificate now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Not due: it renews at `at` (Unix time); look again within `next`. Any back-off of an
    /// earlier failure is over (the certificate in certs-dir is fine).
    Wait {
        /// When it renews.
        at: i64,
        /// When the next pass should look again, at the latest.
        next: Duration,
    },
    /// Due, but its last order failed: wait out the back-off.
    BackingOff(Duration),
    /// Due, but `acme.max-orders-per-minute` orders started in the last minute.
    Throttled(Duration),
    /// Order now, for this reason (logged).
    Order(&'static str),
}

/// Decides for one certificate. An order the plan starts is counted by `throttle`.
pub fn plan(facts: &Facts, throttle: &mut Throttle, instant: Instant) -> Plan {
    let reason = match facts.due {
        Due::NotUntil(_) if facts.forced => "renewal forced (--force-renewal)",
        Due::NotUntil(own) => {
            // The CA's own window, when it publishes one, comes first when it is earlier.
            let (at, recheck) = match facts.ari {
                Some((at, _)) if at <= facts.now => (at, Duration::ZERO),
                Some((at, recheck)) => (at.min(own), recheck),
                None => (own, PASS_EVERY),
            };
            if at > facts.now {
                let wait = Duration::from_secs(u64::try_from(at - facts.now).unwrap_or(0));
                return Plan::Wait {
                    at,
                    next: wait.min(recheck.max(ARI_RECHECK_MIN)).min(PASS_EVERY),
                };
            }
            "the CA's renewal window (ARI) has opened"
        }
        Due::Missing => "no certificate yet",
        Due::Uncovered => "the certificate does not name every host",
        Due::Expiring => "the certificate is in its renewal window",
    };
    if !facts.backoff_left.is_zero() {
        return Plan::BackingOff(facts.backoff_left);
    }
    match throttle.admit(instant) {
        Ok(()) => Plan::Order(reason),
        Err(wait) => Plan::Throttled(wait),
    }
}

/// The back-off after the `failures`-th failure in a row: `retry_after`, doubling per
/// failure, at most [`BACKOFF_MAX`].
pub fn backoff(failures: u32, retry_after: Duration) -> Duration {
    retry_after
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(BACKOFF_MAX)
}

/// At most so many orders started in any minute.
#[derive(Debug)]
pub struct Throttle {
    per_minute: usize,
    started: VecDeque<Instant>,
}

impl Throttle {
    /// A throttle letting `per_minute` orders start in any 60 s.
    pub fn new(per_minute: u32) -> Throttle {
        Throttle {
            per_minute: usize::try_from(per_minute.max(1)).unwrap_or(usize::MAX),
            started: VecDeque::new(),
        }
    }

    /// Counts an order starting at `now`, or says how long until one may start.
    ///
    /// # Errors
    /// The wait, when `per_minute` orders started in the minute before `now`.
    pub fn admit(&mut self, now: Instant) -> Result<(), Duration> {
        while self
            .started
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= MINUTE)
        {
            self.started.pop_front();
        }
        match self.started.front() {
            Some(first) if self.started.len() >= self.per_minute => {
                Err(MINUTE - now.saturating_duration_since(*first))
            }
            _ => {
                self.started.push_back(now);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000;
    const HOUR: i64 = 3600;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn facts(due: Due) -> Facts {
        Facts {
            due,
            ari: None,
            forced: false,
            backoff_left: Duration::ZERO,
            now: NOW,
        }
    }

    #[test]
    fn the_plan_for_each_situation() {
        let order = |reason| Plan::Order(reason);
        let cases: [(&str, Facts, Plan); 13] = [
            ("missing", facts(Due::Missing), order("no certificate yet")),
            (
                "uncovered",
                facts(Due::Uncovered),
                order("the certificate does not name every host"),
            ),
            (
                "expiring",
                facts(Due::Expiring),
                order("the certificate is in its renewal window"),
            ),
            (
                "fine for days: wait, and look again within the hour",
                facts(Due::NotUntil(NOW + 50 * HOUR)),
                Plan::Wait {
                    at: NOW + 50 * HOUR,
                    next: PASS_EVERY,
                },
            ),
            (
                "fine for minutes: look again when it is due",
                facts(Due::NotUntil(NOW + 90)),
                Plan::Wait {
                    at: NOW + 90,
                    next: secs(90),
                },
            ),
            (
                "the CA's window is earlier: it wins, asked again as the CA says",
                Facts {
                    ari: Some((NOW + 10 * HOUR, secs(600))),
                    ..facts(Due::NotUntil(NOW + 50 * HOUR))
                },
                Plan::Wait {
                    at: NOW + 10 * HOUR,
                    next: secs(600),
                },
            ),
            (
                "the CA's window is later: our own wins",
                Facts {
                    ari: Some((NOW + 90 * HOUR, secs(600))),
                    ..facts(Due::NotUntil(NOW + 50 * HOUR))
                },
                Plan::Wait {
                    at: NOW + 50 * HOUR,
                    next: secs(600),
                },
            ),
            (
                "the CA asks to be asked again at once: not more often than a minute",
                Facts {
                    ari: Some((NOW + 10 * HOUR, Duration::ZERO)),
                    ..facts(Due::NotUntil(NOW + 50 * HOUR))
                },
                Plan::Wait {
                    at: NOW + 10 * HOUR,
                    next: secs(60),
                },
            ),
            (
                "the CA's window has opened",
                Facts {
                    ari: Some((NOW - 5, secs(600))),
                    ..facts(Due::NotUntil(NOW + 50 * HOUR))
                },
                order("the CA's renewal window (ARI) has opened"),
            ),
            (
                "forced",
                Facts {
                    forced: true,
                    ..facts(Due::NotUntil(NOW + 50 * HOUR))
                },
                order("renewal forced (--force-renewal)"),
            ),
            (
                "due while backing off",
                Facts {
                    backoff_left: secs(30),
                    ..facts(Due::Missing)
                },
                Plan::BackingOff(secs(30)),
            ),
            (
                "forced while backing off: the back-off holds",
                Facts {
                    forced: true,
                    backoff_left: secs(30),
                    ..facts(Due::NotUntil(NOW + 50 * HOUR))
                },
                Plan::BackingOff(secs(30)),
            ),
            (
                "not due while backing off: the certificate is fine, so waiting wins",
                Facts {
                    backoff_left: secs(30),
                    ..facts(Due::NotUntil(NOW + 50 * HOUR))
                },
                Plan::Wait {
                    at: NOW + 50 * HOUR,
                    next: PASS_EVERY,
                },
            ),
        ];
        for (name, facts, expected) in cases {
            let mut throttle = Throttle::new(10);
            assert_eq!(
                plan(&facts, &mut throttle, Instant::now()),
                expected,
                "{name}"
            );
        }
    }

    #[test]
    fn only_orders_count_against_the_throttle() {
        let start = Instant::now();
        let mut throttle = Throttle::new(1);
        let waiting = facts(Due::NotUntil(NOW + HOUR));
        let backing_off = Facts {
            backoff_left: secs(5),
            ..facts(Due::Missing)
        };
        for f in [waiting, backing_off] {
            assert!(!matches!(plan(&f, &mut throttle, start), Plan::Order(_)));
        }
        let missing = facts(Due::Missing);
        assert!(matches!(
            plan(&missing, &mut throttle, start),
            Plan::Order(_)
        ));
        let later = start + secs(20);
        assert_eq!(
            plan(&missing, &mut throttle, later),
            Plan::Throttled(secs(40))
        );
        assert!(matches!(
            plan(&missing, &mut throttle, start + secs(60)),
            Plan::Order(_)
        ));
    }

    #[test]
    fn back_off_doubles_from_retry_after_up_to_an_hour() {
        let minute = secs(60);
        let got: Vec<u64> = (1..=8).map(|n| backoff(n, minute).as_secs()).collect();
        assert_eq!(got, [60, 120, 240, 480, 960, 1920, 3600, 3600]);
        assert_eq!(backoff(u32::MAX, minute), BACKOFF_MAX);
        assert_eq!(backoff(1, secs(7200)), BACKOFF_MAX);
    }

    #[test]
    fn the_throttle_lets_so_many_orders_start_in_any_minute() {
        let start = Instant::now();
        let at = |s: u64| start + secs(s);
        let mut t = Throttle::new(2);
        assert_eq!(t.admit(at(0)), Ok(()));
        assert_eq!(t.admit(at(10)), Ok(()));
        assert_eq!(t.admit(at(20)), Err(secs(40)), "third in the minute");
        assert_eq!(t.admit(at(59)), Err(secs(1)));
        assert_eq!(t.admit(at(60)), Ok(()), "the first has left the window");
        assert_eq!(t.admit(at(65)), Err(secs(5)));
        assert_eq!(t.admit(at(200)), Ok(()));
        assert_eq!(t.admit(at(200)), Ok(()));
        assert_eq!(t.admit(at(200)), Err(secs(60)));
    }
}
