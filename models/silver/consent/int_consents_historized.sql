{{ config(cluster_by='subject_token') }}
-- Consent as a history (SCD2) per subject and purpose: each grant or revoke opens a period that
-- the next event for the same subject and purpose closes. The open period is the current state.
with

events as (
    select * from {{ ref('stg_consent__events') }}
),

ordered as (
    select
        subject_token,
        purpose,
        consent_action,
        event_ts as valid_from,
        lead(event_ts) over (
            partition by subject_token, purpose order by event_ts, event_id
        ) as valid_to
    from events
)

select
    subject_token,
    purpose,
    consent_action = 'grant' as is_granted,
    valid_from,
    valid_to,
    valid_to is null as is_current
from ordered
