package store

// Params holds fleet-wide and per-device parameter values. Issue 3 fills
// it in.
type Params interface{}
