//! The service's own key-value buckets (the journal and the leases): opened, created when
//! missing with the configured replicas, and raised in place when they have fewer.
//!
//! Unlike the streams, which the collector shares and may have shaped itself, these buckets
//! are ours alone, and a bucket with fewer replicas than its streams makes the service as
//! fragile as its least replicated part: on a three-node cluster, one replica of the journal
//! on the node that dies stalls every writer until it is back. Raising a bucket's replicas is
//! a stream update of `KV_<bucket>` that nats-server performs in place (the leader keeps
//! serving while the new peers catch up), so it is done, and logged, rather than only
//! advised. The count is never lowered: an operator may have raised it on purpose.

use async_nats::jetstream::{self, kv};

use super::{SourceError, api_err};

/// Opens bucket `config.bucket` (`what` names it in logs and errors), creating it with
/// `config` when missing. An existing bucket with fewer replicas than `config.num_replicas`
/// is raised to that count; when the server refuses (a single server, too few nodes up), a
/// warning names the bucket and the fix, and the bucket is used as it is.
pub(crate) async fn open(
    js: &jetstream::Context,
    config: kv::Config,
    what: &str,
) -> Result<kv::Store, SourceError> {
    let bucket = config.bucket.clone();
    let want = config.num_replicas.max(1);
    let store = match js.get_key_value(&bucket).await {
        Ok(s) => s,
        Err(_) => {
            return js
                .create_key_value(config)
                .await
                .map_err(api_err(format!("create {what} bucket {bucket}")));
        }
    };
    let info = store.stream.cached_info();
    let have = info.config.num_replicas.max(1);
    if have >= want {
        return Ok(store);
    }
    let mut raised = info.config.clone();
    raised.num_replicas = want;
    match js.update_stream(&raised).await {
        Ok(_) => {
            tracing::info!(bucket = %bucket, from = have, to = want,
                "raised the replicas of the {what} bucket (nats.kv_replicas)");
            js.get_key_value(&bucket)
                .await
                .map_err(api_err(format!("open {what} bucket {bucket}")))
        }
        Err(e) => {
            tracing::warn!(bucket = %bucket, replicas = have, configured = want, error = %e,
                "the {what} bucket has fewer replicas than nats.kv_replicas and raising them failed; \
                 it is used as it is: raise them by hand (`nats stream edit KV_{bucket} --replicas {want}`) \
                 or set nats.kv_replicas to {have}");
            Ok(store)
        }
    }
}
