-- The storage service's outbox (file.uploaded, file.deleted), published by the relay.
select xtyl_events.install_outbox('xtyl_storage');
