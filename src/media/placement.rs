//! Which worker a room lives on. All of a room's peers share one worker, so forwarding
//! within a room never crosses threads; a new room goes to the worker with the fewest
//! peers.

use std::collections::HashMap;

#[derive(Debug)]
pub(super) struct Placement {
    /// Room → (worker, peers in it).
    rooms: HashMap<String, (usize, usize)>,
    /// Peers per worker.
    load: Vec<usize>,
}

impl Placement {
    pub fn new(workers: usize) -> Self {
        Self {
            rooms: HashMap::new(),
            load: vec![0; workers.max(1)],
        }
    }

    /// A peer joins `room`: the worker it must go to.
    pub fn join(&mut self, room: &str) -> usize {
        let worker = match self.rooms.get_mut(room) {
            Some((worker, peers)) => {
                *peers += 1;
                *worker
            }
            None => {
                let (worker, _) = self
                    .load
                    .iter()
                    .enumerate()
                    .min_by_key(|(i, load)| (**load, *i))
                    .unwrap_or((0, &0));
                self.rooms.insert(room.to_owned(), (worker, 1));
                worker
            }
        };
        self.load[worker] += 1;
        worker
    }

    /// The worker `room` is on, while it has peers.
    pub fn worker_of(&self, room: &str) -> Option<usize> {
        self.rooms.get(room).map(|(worker, _)| *worker)
    }

    /// A peer of `room` left (or never made it to its worker).
    pub fn leave(&mut self, room: &str) {
        let Some((worker, peers)) = self.rooms.get_mut(room) else {
            return;
        };
        let worker = *worker;
        *peers -= 1;
        if *peers == 0 {
            self.rooms.remove(room);
        }
        self.load[worker] = self.load[worker].saturating_sub(1);
    }

    #[cfg(test)]
    fn load(&self) -> &[usize] {
        &self.load
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_room_stays_on_one_worker() {
        let mut placement = Placement::new(2);
        let first = placement.join("a");
        assert_eq!(placement.join("a"), first);
        assert_eq!(placement.join("a"), first);
        assert_eq!(placement.load()[first], 3);
    }

    #[test]
    fn new_rooms_go_to_the_least_loaded_worker() {
        let mut placement = Placement::new(3);
        // A big room on 0, then two small ones fill 1 and 2 before 0 gets another.
        assert_eq!(placement.join("big"), 0);
        for _ in 0..4 {
            placement.join("big");
        }
        assert_eq!(placement.join("b"), 1);
        assert_eq!(placement.join("c"), 2);
        placement.join("c");
        assert_eq!(placement.join("d"), 1);
        assert_eq!(placement.load(), &[5, 2, 2]);
    }

    #[test]
    fn an_emptied_room_can_move_and_load_goes_back_to_zero() {
        let mut placement = Placement::new(2);
        assert_eq!(placement.join("a"), 0);
        assert_eq!(placement.join("b"), 1);
        placement.join("b");
        placement.leave("a");
        placement.leave("a"); // a stray leave is harmless
        assert_eq!(placement.load(), &[0, 2]);
        // "a" is gone; it comes back wherever there is room now.
        placement.join("x");
        assert_eq!(placement.join("a"), 0);
        placement.leave("b");
        placement.leave("b");
        placement.leave("x");
        placement.leave("a");
        assert_eq!(placement.load(), &[0, 0]);
        assert!(placement.rooms.is_empty());
    }
}
