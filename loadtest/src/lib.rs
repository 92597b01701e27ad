//! Load generator for the SFU. Empty until the load-test issue fills it:
//! virtual str0m participants, scenarios and the capacity benchmark.
