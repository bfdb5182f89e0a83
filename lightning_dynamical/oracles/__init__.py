"""Who labels the queried samples: the data set's own labels (:class:`DatasetOracle`), people through files
(:class:`FileOracle`, file formats in :mod:`.files`) or a Label Studio project (:mod:`.label_studio`)."""
