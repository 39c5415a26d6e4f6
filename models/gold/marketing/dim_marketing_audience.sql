{{ config(cluster_by='subject_token') }}
-- The marketing audience: customers with current marketing consent, pseudonymous (token only),
-- described by generalized attributes. Quasi-identifier combinations shared by fewer than k
-- customers lose their postcode area, then their age band, then their country; what is still
-- rarer than k is not released.
with

customers as (
    select *
    from {{ ref('stg_core_banking__customers') }}
    where subject_token in ({{ consented_subjects('marketing') }})
),

spend as (
    select
        subject_token,
        sum(amount) as spend_last_year
    from {{ ref('stg_cards__transactions') }}
    -- the last 12 months of data (not of the calendar, so replays of old data still work)
    where
        transaction_date > (
            select max(transaction_date) - interval 365 day from {{ ref('stg_cards__transactions') }}
        )
    group by subject_token
),

described as (
    select
        customers.subject_token,
        customers.country,
        customers.age_band,
        customers.postcode_area,
        customers.preferred_language,
        {{ generalize_numeric_bin('coalesce(spend.spend_last_year, 0)', 1000) }} as spend_band
    from customers
    left join spend on customers.subject_token = spend.subject_token
),

step_postcode as (
    select
        * exclude (postcode_area),
        case
            when count(*) over (partition by country, age_band, postcode_area) >= {{ var('min_k_gold') }}
                then postcode_area
            else '*'
        end as postcode_area
    from described
),

step_age as (
    select
        * exclude (age_band),
        case
            when count(*) over (partition by country, age_band, postcode_area) >= {{ var('min_k_gold') }}
                then age_band
            else '*'
        end as age_band
    from step_postcode
),

step_country as (
    select
        * exclude (country),
        case
            when count(*) over (partition by country, age_band, postcode_area) >= {{ var('min_k_gold') }}
                then country
            else 'Other'
        end as country
    from step_age
)

-- Whatever still describes fewer than k people is not released.
select
    subject_token,
    country,
    age_band,
    postcode_area,
    preferred_language,
    spend_band
from step_country
qualify count(*) over (partition by country, age_band, postcode_area) >= {{ var('min_k_gold') }}
