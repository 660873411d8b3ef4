-- The rag service's outbox (document.indexed, document.failed), published by the relay.
select xtyl_events.install_outbox('xtyl_rag');
