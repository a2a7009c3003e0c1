//! A photo's restoration chain: the steps its options call for, in the order
//! they run (repair → faces → colorize → upscale), and how far along each
//! step is, read off the photo's job and its finished steps. Pure.

use std::{fmt, str::FromStr};

use super::{
    JobStatus,
    options::{Choice, RestorationOption},
};

/// One step of a chain: the repair every photo gets, or an option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    Repair,
    Option(RestorationOption),
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Repair => "repair",
            Step::Option(option) => option.as_str(),
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Step {
    type Err = UnknownStep;

    fn from_str(s: &str) -> Result<Self, UnknownStep> {
        if s == "repair" {
            return Ok(Step::Repair);
        }
        s.parse()
            .map(Step::Option)
            .map_err(|()| UnknownStep(s.to_owned()))
    }
}

/// A stored step or option name this build does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a restoration step")]
pub struct UnknownStep(pub String);

/// The steps a photo with `choice` runs, in order: the repair first.
pub fn steps(choice: &Choice) -> Vec<Step> {
    std::iter::once(Step::Repair)
        .chain(choice.iter().map(Step::Option))
        .collect()
}

/// The steps of a photo whose options were stored as `ids` (as frozen by
/// its checkout): in chain order whatever order they were stored in; a name
/// this build does not know is an error, never dropped.
pub fn steps_of(ids: &[String]) -> Result<Vec<Step>, UnknownStep> {
    let mut options = ids
        .iter()
        .map(|id| {
            id.parse::<RestorationOption>()
                .map_err(|()| UnknownStep(id.clone()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    options.sort();
    options.dedup();
    Ok(std::iter::once(Step::Repair)
        .chain(options.into_iter().map(Step::Option))
        .collect())
}

/// Where one step stands, as the order view shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepStatus {
    /// Not started: an earlier step is still running.
    Pending,
    /// Its prediction is queued, running, or waiting for a retry.
    Processing,
    /// Its output is stored.
    Completed,
    /// It failed for good, and with it the photo.
    Failed,
    /// An earlier step failed: this one never runs.
    Skipped,
}

impl StepStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Processing => "processing",
            StepStatus::Completed => "completed",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
        }
    }
}

/// The photo's job, as far as its chain is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobProgress {
    /// The position of the step the job is on.
    pub step: usize,
    pub status: JobStatus,
    /// The job's attempts, all steps together.
    pub attempts: u32,
    /// The job's attempts when its current step began.
    pub step_attempts_from: u32,
    pub error: Option<String>,
}

/// One step, with where it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepState {
    pub step: Step,
    pub status: StepStatus,
    pub attempts: u32,
    pub error: Option<String>,
}

/// Every step of a chain with where it stands: `finished` holds the
/// attempts each completed step took, by position; the job says what the
/// step it is on is doing. A chain whose job is completed is completed
/// throughout.
pub fn progress(steps: &[Step], finished: &[(usize, u32)], job: Option<&JobProgress>) -> Vec<StepState> {
    steps
        .iter()
        .enumerate()
        .map(|(position, &step)| {
            let done = finished.iter().find(|(p, _)| *p == position).map(|(_, a)| *a);
            let (status, attempts, error) = match (done, job) {
                (Some(attempts), _) => (StepStatus::Completed, attempts, None),
                (None, Some(job)) if job.status == JobStatus::Completed => (StepStatus::Completed, 0, None),
                (None, Some(job)) if position == job.step => {
                    let attempts = job.attempts.saturating_sub(job.step_attempts_from);
                    match job.status {
                        JobStatus::Failed => (StepStatus::Failed, attempts, job.error.clone()),
                        JobStatus::Pending => (StepStatus::Pending, attempts, None),
                        _ => (StepStatus::Processing, attempts, job.error.clone()),
                    }
                }
                (None, Some(job)) if position > job.step && job.status == JobStatus::Failed => {
                    (StepStatus::Skipped, 0, None)
                }
                _ => (StepStatus::Pending, 0, None),
            };
            StepState {
                step,
                status,
                attempts,
                error,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn choice(ids: &[&str]) -> Choice {
        let ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
        Choice::parse(&ids, |_| true).expect("a valid choice")
    }

    #[test]
    fn the_repair_runs_first_and_the_options_in_chain_order() {
        let names = |steps: Vec<Step>| steps.into_iter().map(Step::as_str).collect::<Vec<_>>();
        assert_eq!(names(steps(&Choice::default())), ["repair"]);
        assert_eq!(
            names(steps(&choice(&["upscale_2x", "faces", "colorize"]))),
            ["repair", "faces", "colorize", "upscale_2x"]
        );
        let stored = ["upscale_4x".to_owned(), "faces".to_owned()];
        assert_eq!(
            names(steps_of(&stored).unwrap()),
            ["repair", "faces", "upscale_4x"]
        );
    }

    #[test]
    fn a_stored_name_this_build_does_not_know_is_an_error() {
        assert_eq!(
            steps_of(&["sharpen".to_owned()]),
            Err(UnknownStep("sharpen".into()))
        );
        assert_eq!("repair".parse::<Step>(), Ok(Step::Repair));
        assert!("".parse::<Step>().is_err());
    }

    fn job(step: usize, status: JobStatus, attempts: u32, from: u32) -> JobProgress {
        JobProgress {
            step,
            status,
            attempts,
            step_attempts_from: from,
            error: Some("the model failed".into()),
        }
    }

    #[test]
    fn each_step_shows_its_own_attempts_and_only_the_failed_one_its_error() {
        let chain = steps(&choice(&["faces", "colorize"]));
        let states = progress(&chain, &[(0, 1)], Some(&job(1, JobStatus::Failed, 4, 1)));
        let seen: Vec<(&str, &str, u32, bool)> = states
            .iter()
            .map(|s| (s.step.as_str(), s.status.as_str(), s.attempts, s.error.is_some()))
            .collect();
        assert_eq!(
            seen,
            [
                ("repair", "completed", 1, false),
                ("faces", "failed", 3, true),
                ("colorize", "skipped", 0, false),
            ]
        );
    }

    #[test]
    fn a_running_chain_shows_what_is_done_what_runs_and_what_waits() {
        let chain = steps(&choice(&["faces", "upscale_2x"]));
        let running = progress(&chain, &[(0, 2)], Some(&job(1, JobStatus::Processing, 3, 2)));
        let statuses: Vec<_> = running.iter().map(|s| (s.status, s.attempts)).collect();
        assert_eq!(
            statuses,
            [
                (StepStatus::Completed, 2),
                (StepStatus::Processing, 1),
                (StepStatus::Pending, 0)
            ]
        );
        let fresh = progress(&chain, &[], Some(&job(0, JobStatus::Pending, 0, 0)));
        assert!(fresh.iter().all(|s| s.status == StepStatus::Pending));
        // Photos restored before chains existed have no step rows.
        let old = progress(&chain[..1], &[], Some(&job(0, JobStatus::Completed, 1, 0)));
        assert_eq!(old[0].status, StepStatus::Completed);
    }
}
