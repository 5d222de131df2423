package store

// Outbox holds events waiting to be published to the AMQP broker, written
// in the same transaction as the events themselves, so nothing stored is
// ever lost on its way out. Issue 5 fills it in.
type Outbox interface{}
