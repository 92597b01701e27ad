// The conference client is being written.
