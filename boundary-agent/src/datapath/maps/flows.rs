//! Forgetting what the datapath tracked: flows (both tables) and fragment verdicts.

use super::{Maps, MapsError};

impl Maps {
    /// Empties the conntrack and fragment maps, then makes cached verdicts stale (one may rest
    /// on a forgotten flow). Entries the datapath adds meanwhile may stay. Returns how many
    /// entries were removed.
    pub(in crate::datapath) fn forget_flows(&mut self) -> Result<usize, MapsError> {
        let mut removed = 0;
        let flows: Vec<_> = self.conntrack.keys().filter_map(Result::ok).collect();
        for k in flows {
            removed += usize::from(self.conntrack.remove(&k).is_ok());
        }
        let accepted: Vec<_> = self
            .conntrack_accepted
            .keys()
            .filter_map(Result::ok)
            .collect();
        for k in accepted {
            removed += usize::from(self.conntrack_accepted.remove(&k).is_ok());
        }
        let frags: Vec<_> = self.fragments.keys().filter_map(Result::ok).collect();
        for k in frags {
            removed += usize::from(self.fragments.remove(&k).is_ok());
        }
        self.invalidate_verdicts()?;
        Ok(removed)
    }
}
