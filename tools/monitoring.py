"""Failure visibility and abuse limits of a deployment: what ``make deploy`` adds around Chalice.

- The resize function runs asynchronously (S3 events). Lambda retries a failed invocation twice,
  then, instead of dropping the event, sends a record of it (the event, the error) to the SQS
  queue ``imageshelf-<name>-resize-dlq`` (an ``OnFailure`` destination; the function's role may
  ``sqs:SendMessage`` to that one queue). The queue keeps records 14 days, SQS's maximum; the
  reconciler drains it, reading its URL from ``RESIZE_DLQ_URL``.
- CloudWatch alarms (``ALARMS``), each notifying the SNS topic ``imageshelf-<name>-alarms``:
  resize errors, messages in the dead-letter queue, API 5xx answers, errors of the operations
  function (invoked directly by SDK clients and other services, so no API metric sees them).
  docs/deploy.md says what to do when each fires.
- API Gateway stage throttling: the stage's ``api_throttling`` (``rate_limit`` requests per
  second, ``burst_limit``) from ``.chalice/config.json``, on every method of the stage.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

DLQ_RETENTION_SECONDS = 14 * 24 * 3600
# Lambda's own defaults, written down: 2 retries, events older than 6 hours are given up on.
RESIZE_RETRIES = 2
RESIZE_MAX_EVENT_AGE_SECONDS = 6 * 3600
PERIOD_SECONDS = 300


@dataclass(frozen=True)
class Alarm:
    """One CloudWatch alarm of a deployment (``imageshelf-<name>-<suffix>``)."""

    suffix: str
    namespace: str
    metric: str
    statistic: str
    threshold: float
    description: str
    function: str = ""  # an AWS/Lambda alarm's function, as Chalice names it (resize, operations)


ALARMS = (
    Alarm(
        "resize-errors",
        "AWS/Lambda",
        "Errors",
        "Sum",
        1,
        "The resize function failed (an exception or a timeout, not a refused image) at least once "
        "in 5 minutes. See docs/deploy.md, 'Alarms'.",
        function="resize",
    ),
    Alarm(
        "resize-dlq-depth",
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
        "Maximum",
        1,
        "An upload failed every resize attempt and waits in the dead-letter queue. "
        "See docs/deploy.md, 'Alarms'.",
    ),
    Alarm(
        "api-5xx",
        "AWS/ApiGateway",
        "5XXError",
        "Sum",
        5,
        "The API answered 5 or more 5xx responses in 5 minutes. See docs/deploy.md, 'Alarms'.",
    ),
    Alarm(
        "operations-errors",
        "AWS/Lambda",
        "Errors",
        "Sum",
        1,
        "The operations function failed (an exception or a timeout, not an answer with an error) at "
        "least once in 5 minutes. See docs/deploy.md, 'Alarms'.",
        function="operations",
    ),
)


def ensure_queue(sqs: Any, name: str) -> tuple[str, str]:
    """Create (or re-configure) the dead-letter queue; returns its (url, arn)."""
    attributes = {"MessageRetentionPeriod": str(DLQ_RETENTION_SECONDS), "SqsManagedSseEnabled": "true"}
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    # CreateQueue of an existing queue with other attributes fails on AWS: set them instead.
    sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return str(url), str(arn)


def route_failures(lam: Any, function_name: str, queue_arn: str, patience: float = 60) -> str:
    """Send the function's failed asynchronous invocations to ``queue_arn``.

    Lambda checks that the function's role may send to the queue; a role Chalice just created or
    changed takes a few seconds to be usable everywhere in IAM, hence the retries.
    """
    deadline = time.monotonic() + patience
    while True:
        try:
            lam.put_function_event_invoke_config(
                FunctionName=function_name,
                MaximumRetryAttempts=RESIZE_RETRIES,
                MaximumEventAgeInSeconds=RESIZE_MAX_EVENT_AGE_SECONDS,
                DestinationConfig={"OnFailure": {"Destination": queue_arn}},
            )
            return f"{function_name}: failed events go to {queue_arn.rsplit(':', 1)[-1]}"
        except lam.exceptions.InvalidParameterValueException:
            if time.monotonic() > deadline:
                raise
            time.sleep(5)


def throttle(apigateway: Any, rest_api_id: str, api_stage: str, rate_limit: float, burst_limit: int) -> str:
    """Throttle every method of the API's stage (``*/*``) to ``rate_limit`` and ``burst_limit``."""
    apigateway.update_stage(
        restApiId=rest_api_id,
        stageName=api_stage,
        patchOperations=[
            {"op": "replace", "path": "/*/*/throttling/rateLimit", "value": str(rate_limit)},
            {"op": "replace", "path": "/*/*/throttling/burstLimit", "value": str(burst_limit)},
        ],
    )
    return f"API stage {api_stage}: at most {rate_limit} requests/s, bursts of {burst_limit}"


def alarm_dimensions(
    alarm: Alarm, function_name: Callable[[str], str], queue_name: str, api_name: str, api_stage: str
) -> list[dict[str, str]]:
    """What each alarm watches; ``function_name`` gives the Lambda name of a function by Chalice's
    name for it. API Gateway keys a REST API's metrics by its name and stage."""
    if alarm.namespace == "AWS/Lambda":
        return [{"Name": "FunctionName", "Value": function_name(alarm.function)}]
    if alarm.namespace == "AWS/SQS":
        return [{"Name": "QueueName", "Value": queue_name}]
    return [{"Name": "ApiName", "Value": api_name}, {"Name": "Stage", "Value": api_stage}]


def ensure_alarms(
    cloudwatch: Any,
    sns: Any,
    prefix: str,
    function_name: Callable[[str], str],
    queue_name: str,
    api_name: str,
    api_stage: str,
) -> list[str]:
    """Create or update the alarms ``<prefix>-<suffix>`` and their topic ``<prefix>-alarms``."""
    topic = sns.create_topic(Name=f"{prefix}-alarms")["TopicArn"]
    done = []
    for alarm in ALARMS:
        cloudwatch.put_metric_alarm(
            AlarmName=f"{prefix}-{alarm.suffix}",
            AlarmDescription=alarm.description,
            Namespace=alarm.namespace,
            MetricName=alarm.metric,
            Dimensions=alarm_dimensions(alarm, function_name, queue_name, api_name, api_stage),
            Statistic=alarm.statistic,
            Period=PERIOD_SECONDS,
            EvaluationPeriods=1,
            Threshold=alarm.threshold,
            ComparisonOperator="GreaterThanOrEqualToThreshold",
            # No data means nothing happened: no uploads, no requests.
            TreatMissingData="notBreaching",
            AlarmActions=[topic],
            OKActions=[topic],
        )
        done.append(f"alarm {prefix}-{alarm.suffix}")
    return [
        *done,
        f"alarms notify {topic} (subscribe: aws sns subscribe --topic-arn {topic} "
        "--protocol email --notification-endpoint you@example.com)",
    ]


def remove(
    cloudwatch: Any, sns: Any, sqs: Any, logs: Any, prefix: str, queue_name: str, log_groups: Iterable[str]
) -> list[str]:
    """Delete the alarms, their topic, the dead-letter queue and the functions' log groups."""
    done = []
    names = [f"{prefix}-{alarm.suffix}" for alarm in ALARMS]
    existing = [a["AlarmName"] for a in cloudwatch.describe_alarms(AlarmNames=names)["MetricAlarms"]]
    if existing:
        cloudwatch.delete_alarms(AlarmNames=existing)
        done.append(f"deleted alarms {', '.join(existing)}")
    for topic in sns.list_topics()["Topics"]:  # a few per account: one page
        if topic["TopicArn"].rsplit(":", 1)[-1] == f"{prefix}-alarms":
            sns.delete_topic(TopicArn=topic["TopicArn"])
            done.append(f"deleted topic {prefix}-alarms")
    with contextlib.suppress(sqs.exceptions.QueueDoesNotExist):
        sqs.delete_queue(QueueUrl=sqs.get_queue_url(QueueName=queue_name)["QueueUrl"])
        done.append(f"deleted queue {queue_name}")
    for group in log_groups:
        with contextlib.suppress(logs.exceptions.ResourceNotFoundException):
            logs.delete_log_group(logGroupName=group)
            done.append(f"deleted log group {group}")
    return done
