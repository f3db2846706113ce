"""Alarms to an SNS topic and one dashboard for a cluster's spot-rebalancer."""

from __future__ import annotations

import math

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from spot_rebalancer.telemetry import NAMESPACE

from .config import SpotRebalancerConfig

ALARM_PERIOD = Duration.minutes(5)
# A throttle or two is absorbed by retries; throttling this many periods in a row is not.
THROTTLE_PERIODS = 3
# Census metrics arrive once a schedule period; their alarms look at this many periods.
CENSUS_PERIODS = 3
# A spot warning gives two minutes: a queued event older than this has missed it.
BACKLOG_AGE_SECONDS = 300
# The work queue may hold a few rounds of work in a storm; more than this for this long is not keeping up.
BACKLOG_ROUNDS = 3
BACKLOG_PERIODS = 3
# Schedule periods without one invocation before the heartbeat alarm fires.
HEARTBEAT_PERIODS = 3
# Moves failing are judged over this window, and only once this many moves settled in it: each
# failure backs its workload off, so a few failures alone are the loop doing its job.
MOVE_FAILURE_WINDOW = Duration.hours(1)
MOVE_FAILURE_MIN_SETTLED = 5
FLEET_DIMENSIONS = f"{{{NAMESPACE},Architecture,CapacityType,ClusterName}}"


class Monitoring(Construct):
    """The alarm topic (new and KMS-encrypted unless one is given), the alarms and the dashboard."""

    def __init__(self, scope: Construct, construct_id: str, *, config: SpotRebalancerConfig,
                 events_function: lambda_.IFunction, schedule_function: lambda_.IFunction,
                 work_queue: sqs.IQueue, dead_letter_queues: dict[str, sqs.IQueue], batch_size: int) -> None:
        super().__init__(scope, construct_id)
        self._config = config
        self.topic = self._topic()
        self._action = actions.SnsAction(self.topic)
        self.alarms: list[cloudwatch.Alarm] = []
        cluster = config.cluster_name

        for label, queue in dead_letter_queues.items():
            self._alarm(f"{label}NotEmpty", queue.metric_approximate_number_of_messages_visible(
                period=ALARM_PERIOD, statistic="Maximum"),
                threshold=1, periods=1,
                description=f"{label} of spot-rebalancer for {cluster} holds messages: events or cycles "
                            "that were not handled. Read them, fix the cause, then redrive them.")
        for label, function in (("EventsFunction", events_function), ("ScheduleFunction", schedule_function)):
            self._alarm(f"{label}Errors", function.metric_errors(period=ALARM_PERIOD, statistic="Sum"),
                        threshold=1, periods=1,
                        description=f"The spot-rebalancer {label} for {cluster} failed; see its logs.")
            self._alarm(f"{label}Throttles", function.metric_throttles(period=ALARM_PERIOD, statistic="Sum"),
                        threshold=1, periods=THROTTLE_PERIODS,
                        description=f"The spot-rebalancer {label} for {cluster} has been throttled for "
                                    f"{THROTTLE_PERIODS * 5} minutes; check the account's concurrency.")
        # What one round of invocations takes off the queue (records, batch by batch).
        backlog = BACKLOG_ROUNDS * batch_size * config.events_max_concurrency
        self._alarm("WorkQueueBacklog", work_queue.metric_approximate_number_of_messages_visible(
            period=ALARM_PERIOD, statistic="Minimum"), threshold=backlog, periods=BACKLOG_PERIODS,
            description=f"The work queue of spot-rebalancer for {cluster} has held at least {backlog} events "
                        f"for {BACKLOG_PERIODS * 5} minutes: the events function does not keep up.")
        self._alarm("WorkQueueOldestMessage", work_queue.metric_approximate_age_of_oldest_message(
            period=ALARM_PERIOD, statistic="Maximum"), threshold=BACKLOG_AGE_SECONDS, periods=1,
            description=f"An event has waited {BACKLOG_AGE_SECONDS} s or more in the work queue of "
                        f"spot-rebalancer for {cluster}: drains start too late for spot warnings.")
        census_period = Duration.minutes(config.schedule_minutes)
        self._alarm("ScheduleFunctionNotInvoked",
                    schedule_function.metric_invocations(period=census_period, statistic="Sum"),
                    threshold=1, periods=HEARTBEAT_PERIODS,
                    comparison=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
                    # No invocation publishes no data point at all.
                    missing=cloudwatch.TreatMissingData.BREACHING,
                    description=f"The spot-rebalancer schedule function for {cluster} has not run for "
                                f"{HEARTBEAT_PERIODS} periods: no sweep, census or rebalance.")
        # A partial batch response keeps failed records out of the function's Errors metric.
        self._alarm("RecordsFailed", self._metric("RecordsFailed", "Sum"), threshold=1, periods=1,
                    description=f"The events function of spot-rebalancer for {cluster} failed records; SQS "
                                "delivers them again, then to the dead-letter queue. See its logs.")
        self._alarm("DrainDeadlineMissed", self._metric("DeadlineMissed", "Sum"), threshold=1, periods=1,
                    description=f"A drain in {cluster} did not finish before its instance went away.")
        blocked_periods = math.ceil(config.pdb_blocked_alarm_minutes / 5)
        # Drains' refusals and the rebalancer's (Source=move), which it publishes every cycle.
        blocked = cloudwatch.MathExpression(
            expression="FILL(drains, 0) + FILL(moves, 0)", period=ALARM_PERIOD,
            using_metrics={"drains": self._metric("EvictionsBlockedByPdb", "Sum"),
                           "moves": self._metric("EvictionsBlockedByPdb", "Sum", Source="move")},
            label="evictions blocked by PodDisruptionBudgets")
        self._alarm("EvictionsBlockedByPdb", blocked, threshold=1, periods=blocked_periods,
                    description=f"PodDisruptionBudgets in {cluster} have blocked evictions for "
                                f"{blocked_periods * 5} minutes in a row.")
        if config.spot_share_target_percent is not None:
            self._alarm("SpotShareBelowTarget",
                        self._metric("SpotShareRequestedCpu", "Average", period=census_period),
                        threshold=config.spot_share_target_percent, periods=CENSUS_PERIODS,
                        comparison=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
                        # No census is a problem of its own (the schedule alarms), not a low share.
                        missing=cloudwatch.TreatMissingData.MISSING,
                        description=f"Spot capacity serves less than {config.spot_share_target_percent:g}%"
                                    f" of the requested CPU in {cluster}.")
        if config.misplaced_pods_threshold is not None:
            # After a storm the count stays high for a while as the rebalancer works it down: only
            # a count above the threshold that is not going down means the rebalancer is stuck.
            threshold = config.misplaced_pods_threshold
            stuck = cloudwatch.MathExpression(
                expression=f"IF(misplaced > {threshold} AND DIFF(misplaced) >= 0, 1, 0)",
                using_metrics={"misplaced": self._metric("MisplacedPods", "Maximum", period=census_period)},
                period=census_period, label="misplaced pods above the threshold and not going down")
            self._alarm("MisplacedPodsAboveThreshold", stuck, threshold=1, periods=CENSUS_PERIODS,
                        missing=cloudwatch.TreatMissingData.MISSING,
                        description=f"More than {config.misplaced_pods_threshold} pods in {cluster} run on "
                                    "capacity their affinity does not prefer, and the rebalancer is not "
                                    "moving them back.")
        if config.notification_topic_arn:
            self._alarm("NotificationsFailed", self._metric("NotificationsFailed", "Sum"), threshold=1,
                        periods=1,
                        description=f"spot-rebalancer for {cluster} could not publish a notification to "
                                    f"{config.notification_topic_arn}; see the functions' logs (its key "
                                    "policy, a deleted topic, throttling).")
        if config.move_failure_alarm_percent is not None:
            percent = config.move_failure_alarm_percent
            # The share compared without dividing: nothing settled has no share to divide out.
            failing = cloudwatch.MathExpression(
                expression=(f"IF(FILL(failed, 0) + FILL(succeeded, 0) >= {MOVE_FAILURE_MIN_SETTLED} AND "
                            f"100 * FILL(failed, 0) > {percent:g} * (FILL(failed, 0) + FILL(succeeded, 0)), "
                            "1, 0)"),
                using_metrics={"failed": self._metric("MovesFailed", "Sum", period=MOVE_FAILURE_WINDOW),
                               "succeeded": self._metric("MovesSucceeded", "Sum",
                                                         period=MOVE_FAILURE_WINDOW)},
                period=MOVE_FAILURE_WINDOW, label="more of the settled moves failed than the setting allows")
            self._alarm("MovesFailing", failing, threshold=1, periods=1,
                        description=f"More than {percent:g}% of the rebalancer's moves in {cluster} failed "
                                    "in the last hour: replacements did not come up Ready where predicted "
                                    "(a custom scheduler profile, a webhook, or no room after all).")
        self.dashboard = self._dashboard(events_function, schedule_function, work_queue, dead_letter_queues)

    def _topic(self) -> sns.ITopic:
        config = self._config
        if config.alarm_topic_arn:
            topic = sns.Topic.from_topic_arn(self, "AlarmTopic", config.alarm_topic_arn)
        else:
            key = kms.Key(self, "AlarmTopicKey", enable_key_rotation=True,
                          removal_policy=RemovalPolicy.DESTROY,
                          description=f"Encrypts spot-rebalancer alarms for {config.cluster_name}")
            # CloudWatch publishes alarms to an encrypted topic only if the key lets it.
            key.grant(iam.ServicePrincipal("cloudwatch.amazonaws.com"), "kms:Decrypt", "kms:GenerateDataKey*")
            topic = sns.Topic(self, "AlarmTopic", master_key=key, enforce_ssl=True,
                              display_name=f"spot-rebalancer alarms for {config.cluster_name}")
        if config.alarm_email:
            topic.add_subscription(subscriptions.EmailSubscription(config.alarm_email))
        return topic

    def _metric(self, name: str, statistic: str, *, period: Duration = ALARM_PERIOD,
                label: str | None = None, **dimensions: str) -> cloudwatch.Metric:
        return cloudwatch.Metric(namespace=NAMESPACE, metric_name=name, statistic=statistic, period=period,
                                 dimensions_map={"ClusterName": self._config.cluster_name, **dimensions},
                                 label=label)

    def _alarm(self, construct_id: str, metric: cloudwatch.IMetric, *, threshold: float, periods: int,
               description: str,
               comparison: cloudwatch.ComparisonOperator =
               cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
               missing: cloudwatch.TreatMissingData = cloudwatch.TreatMissingData.NOT_BREACHING) -> None:
        alarm = cloudwatch.Alarm(self, construct_id, metric=metric, threshold=threshold,
                                 evaluation_periods=periods, datapoints_to_alarm=periods,
                                 comparison_operator=comparison, treat_missing_data=missing,
                                 alarm_description=description)
        alarm.add_alarm_action(self._action)
        alarm.add_ok_action(self._action)
        self.alarms.append(alarm)

    def _fleet(self, metric_name: str, title: str) -> cloudwatch.GraphWidget:
        period = Duration.minutes(self._config.schedule_minutes)
        query = f"{FLEET_DIMENSIONS} MetricName=\"{metric_name}\" ClusterName=\"{self._config.cluster_name}\""
        search = cloudwatch.MathExpression(
            expression=f"SEARCH('{query}', 'Average', {int(period.to_seconds())})", label="", period=period)
        return cloudwatch.GraphWidget(title=title, left=[search], stacked=True, width=8)

    def _cost_widgets(self, census: Duration) -> list[cloudwatch.IWidget]:
        """What the fleet costs, what spot saves, and the on-demand nodes emptied and scaled in."""
        return [
            self._fleet("FleetCostPerHour", "Fleet cost ($/hour) by capacity type and architecture"),
            cloudwatch.GraphWidget(title="Spot saving against on-demand ($/hour)", width=8, left=[
                self._metric("SpotSavingPerHour", "Average", period=census, label="spot saving")]),
            cloudwatch.GraphWidget(title="On-demand nodes emptied by moves", width=8,
                left=[self._metric("OnDemandNodesEmptied", "Sum", label="emptied"),
                      self._metric("NodesScaledIn", "Sum", label="scaled in")],
                right=[self._metric("EmptiedNodesCostPerHour", "Sum", label="their cost ($/hour)")]),
        ]

    def _prediction_misses(self) -> cloudwatch.GraphWidget:
        """Moves whose replacement did not land where the planner predicted the scheduler would put
        it, as a share of the moves that settled: the field measure of the prediction."""
        misses = cloudwatch.MathExpression(
            expression="100 * failed / (succeeded + failed)", label="prediction misses (%)",
            using_metrics={"failed": self._metric("MovesFailed", "Sum"),
                           "succeeded": self._metric("MovesSucceeded", "Sum")})
        return cloudwatch.GraphWidget(title="Prediction misses: failed / settled moves (%)", width=8,
                                      left=[misses], left_y_axis=cloudwatch.YAxisProps(min=0, max=100))

    def _dashboard(self, events_function: lambda_.IFunction, schedule_function: lambda_.IFunction,
                   work_queue: sqs.IQueue, dead_letter_queues: dict[str, sqs.IQueue]) -> cloudwatch.Dashboard:
        census = Duration.minutes(self._config.schedule_minutes)
        dashboard = cloudwatch.Dashboard(self, "Dashboard",
                                         dashboard_name=f"SpotRebalancer-{self._config.cluster_name}")
        dashboard.add_widgets(cloudwatch.TextWidget(
            markdown=f"# spot-rebalancer: {self._config.cluster_name}", width=24, height=1))
        dashboard.add_widgets(
            self._fleet("Nodes", "Fleet mix: nodes by capacity type and architecture"),
            self._fleet("RequestedCpu", "Requested CPU by capacity type and architecture"),
            cloudwatch.GraphWidget(title="Spot share of requested CPU (%)", width=8, left=[
                self._metric("SpotShareRequestedCpu", "Average", period=census, label="spot share")],
                left_annotations=[cloudwatch.HorizontalAnnotation(
                    value=self._config.spot_share_target_percent, label="target")]
                if self._config.spot_share_target_percent is not None else None),
        )
        dashboard.add_widgets(
            cloudwatch.GraphWidget(title="Event to cordon latency (ms)", width=8, left=[
                self._metric("EventToCordonLatency", statistic, label=statistic)
                for statistic in ("p50", "p90", "Maximum")]),
            cloudwatch.GraphWidget(title="Drains", width=8,
                left=[self._metric("PodsEvicted", "Sum", label="pods evicted", Source="drain"),
                      self._metric("EvictionsBlockedByPdb", "Sum", label="blocked by PDB"),
                      self._metric("DeadlineMissed", "Sum", label="deadline missed"),
                      self._metric("EventsIgnored", "Sum", label="events ignored")],
                right=[self._metric("DrainDuration", "Maximum", label="longest drain")]),
            cloudwatch.GraphWidget(title="Moves back to preferred capacity", width=8,
                left=[self._metric("MovesPlanned", "Sum", label="planned"),
                      self._metric("PodsEvicted", "Sum", label="evicted", Source="move"),
                      self._metric("MovesSucceeded", "Sum", label="succeeded"),
                      self._metric("MovesFailed", "Sum", label="failed"),
                      self._metric("EvictionsBlockedByPdb", "Sum", label="blocked by PDB", Source="move")],
                right=[self._metric("MisplacedPods", "Maximum", period=census, label="misplaced pods")]),
        )
        dashboard.add_widgets(self._prediction_misses())
        dashboard.add_widgets(*self._cost_widgets(census))
        dashboard.add_widgets(
            cloudwatch.GraphWidget(title="Work queue", width=8,
                left=[work_queue.metric_approximate_number_of_messages_visible(label="waiting")]
                     + [queue.metric_approximate_number_of_messages_visible(label=label)
                        for label, queue in dead_letter_queues.items()],
                right=[work_queue.metric_approximate_age_of_oldest_message(label="oldest (s)")]),
            cloudwatch.GraphWidget(title="Functions: errors and throttles", width=8, left=[
                metric for function, name in ((events_function, "events"), (schedule_function, "schedule"))
                for metric in (function.metric_errors(label=f"{name} errors"),
                               function.metric_throttles(label=f"{name} throttles"))]),
            cloudwatch.GraphWidget(title="Functions: duration (ms)", width=8, left=[
                events_function.metric_duration(statistic="Maximum", label="events"),
                schedule_function.metric_duration(statistic="Maximum", label="schedule")]),
        )
        return dashboard
