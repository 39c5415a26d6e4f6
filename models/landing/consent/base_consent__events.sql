-- Parses and checks consent events (JSON lines). Ephemeral: plaintext never persists past this CTE.
with

records as (
    {{ landing_records('consent', 'events', format='jsonl', fields=['event_id', 'customer_id', 'purpose', 'action', 'event_ts', 'channel']) }}
),

parsed as (
    select
        source_file,
        record_hash,
        ingest_key,
        raw_record,
        doc is not null as is_parseable,
        coalesce(doc_wrong_type, false) as has_wrong_type,
        nullif(trim(doc.event_id), '') as event_id,
        -- a JSON array or object here is no customer number: NULL, and the row quarantined
        nullif(trim({{ landing_json_field('customer_id') }}), '') as customer_id,
        doc.purpose as purpose,
        doc.action as consent_action,
        doc.event_ts as event_ts,
        doc.channel as channel
    from records
)

select
    *,
    case
        when not is_parseable then 'unparseable_line'
        when has_wrong_type then 'wrong_type'
        when event_id is null or customer_id is null then 'missing_key'
        when purpose not in ('analytics', 'marketing', 'fraud_prevention', 'partner_sharing')
            or purpose is null then 'unknown_enum'
        when consent_action not in ('grant', 'revoke') or consent_action is null then 'unknown_enum'
        when not {{ is_valid_timestamp('event_ts') }} then 'malformed_date'
    end as reject_reason
from parsed
