"""Nothing lost: the run's files on disk, written atomically (:mod:`.files`), one run's records and checkpoints
(:mod:`.run`), every queried sample (:mod:`.queries`), older formats brought up to date (:mod:`.migrate`),
old module paths (:mod:`.moved`), model weights (:mod:`.weights`), seeds and RNG streams (:mod:`.rng`), and the
crash injection the kill tests use at the writers' kill points (:mod:`.faults`)."""
