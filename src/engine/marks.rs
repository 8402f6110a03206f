//! When the store shows a started task as running.
//!
//! A task's script slot frees as soon as its processes are gone, while its outputs are still
//! being hashed and stored, so the next task's script starts before the previous task is
//! published. Marking the new task running at once would let `grit status` show more tasks
//! running than `-j` (or a step's `parallel`) allows, for the few milliseconds between the two
//! group commits. So a start is marked in the first group commit where it fits under those
//! limits, counting the tasks that same group publishes: the store's running count never
//! exceeds the limits, and the task it replaces leaves in the same transaction.
//!
//! Marking later never delays a script (the semaphores of [`crate::executor::ScriptGate`] and
//! the engine's slots do that); it only moves the store's `running` row. A crash before the mark
//! leaves the task pending, which the next run takes up like a running one. The time recorded
//! as its start is when its script was let start, not when the mark landed.

use std::time::SystemTime;

/// The tasks marked running in the store (by committed groups or the one in flight) and not yet
/// published, and the starts still waiting for room.
pub(super) struct RunningMarks {
    /// `-j`: the most tasks the store shows running at once.
    limit: usize,
    marked: usize,
    /// Each step's `parallel` (`usize::MAX` without one), by slot index.
    caps: Vec<usize>,
    marked_per_step: Vec<usize>,
    /// Starts not marked yet, in the order they came: (slot index, task id, when).
    waiting: Vec<(usize, i64, SystemTime)>,
}

impl RunningMarks {
    pub(super) fn new(limit: usize, caps: Vec<usize>) -> RunningMarks {
        RunningMarks {
            limit,
            marked: 0,
            marked_per_step: vec![0; caps.len()],
            caps,
            waiting: Vec::new(),
        }
    }

    /// A task of step `slot` may run its script from now on.
    pub(super) fn started(&mut self, slot: usize, task_id: i64) {
        self.waiting.push((slot, task_id, SystemTime::now()));
    }

    /// Whether a group publishing nothing would mark a start.
    pub(super) fn any_fits(&self) -> bool {
        self.marked < self.limit
            && self
                .waiting
                .iter()
                .any(|&(slot, _, _)| self.marked_per_step[slot] < self.caps[slot])
    }

    /// The starts the next group marks running, given the finished tasks (slot index, task id)
    /// it publishes. A finished task never marked is marked in the same group (it starts and
    /// ends there); the others make room for waiting starts.
    pub(super) fn for_group(
        &mut self,
        publishing: impl IntoIterator<Item = (usize, i64)>,
    ) -> Vec<(i64, SystemTime)> {
        let mut marks = Vec::new();
        for (slot, task_id) in publishing {
            if let Some(at) = self.waiting.iter().position(|&(_, id, _)| id == task_id) {
                let (_, id, when) = self.waiting.remove(at);
                marks.push((id, when));
            } else {
                self.marked = self.marked.saturating_sub(1);
                self.marked_per_step[slot] = self.marked_per_step[slot].saturating_sub(1);
            }
        }
        let RunningMarks {
            limit,
            marked,
            caps,
            marked_per_step,
            waiting,
        } = self;
        waiting.retain(|&(slot, id, when)| {
            if *marked < *limit && marked_per_step[slot] < caps[slot] {
                *marked += 1;
                marked_per_step[slot] += 1;
                marks.push((id, when));
                false
            } else {
                true
            }
        });
        marks
    }

    /// Every start not marked yet, whatever the limits: a run being interrupted marks the tasks
    /// whose scripts started, so that they are recorded as interrupted by it.
    pub(super) fn all_waiting(&mut self) -> Vec<(i64, SystemTime)> {
        self.waiting
            .drain(..)
            .map(|(_, id, when)| (id, when))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(marks: &[(i64, SystemTime)]) -> Vec<i64> {
        marks.iter().map(|&(id, _)| id).collect()
    }

    #[test]
    fn a_start_waits_for_the_group_that_publishes_the_task_it_replaces() {
        let mut marks = RunningMarks::new(1, vec![usize::MAX]);
        marks.started(0, 1);
        assert_eq!(ids(&marks.for_group([])), vec![1]);
        // Task 1's script ended and task 2's started; task 1 is not published yet.
        marks.started(0, 2);
        assert!(!marks.any_fits());
        assert!(marks.for_group([]).is_empty());
        // The group publishing task 1 marks task 2.
        assert_eq!(ids(&marks.for_group([(0, 1)])), vec![2]);
        assert!(!marks.any_fits());
    }

    #[test]
    fn a_steps_parallel_holds_while_other_steps_use_the_rest_of_j() {
        let mut marks = RunningMarks::new(3, vec![1, usize::MAX]);
        marks.started(0, 1);
        marks.started(0, 2);
        marks.started(1, 3);
        assert_eq!(ids(&marks.for_group([])), vec![1, 3]);
        assert!(!marks.any_fits(), "step 0 has its one running");
        assert_eq!(ids(&marks.for_group([(0, 1)])), vec![2]);
    }

    #[test]
    fn a_task_that_ends_before_its_mark_is_marked_in_the_group_that_publishes_it() {
        let mut marks = RunningMarks::new(1, vec![usize::MAX]);
        marks.started(0, 1);
        marks.for_group([]);
        marks.started(0, 2);
        // Both end before another group: 1 makes room, 2 is marked and published together.
        let group = ids(&marks.for_group([(0, 1), (0, 2)]));
        assert_eq!(group, vec![2]);
        marks.started(0, 3);
        assert_eq!(ids(&marks.for_group([])), vec![3]);
    }

    #[test]
    fn an_interrupted_run_marks_every_start() {
        let mut marks = RunningMarks::new(1, vec![usize::MAX]);
        marks.started(0, 1);
        marks.for_group([]);
        marks.started(0, 2);
        assert_eq!(ids(&marks.all_waiting()), vec![2]);
        assert!(marks.all_waiting().is_empty());
    }
}
