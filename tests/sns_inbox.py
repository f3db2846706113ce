"""A moto SNS topic with an SQS queue subscribed to it: what a subscriber (AWS Chatbot, a mailbox)
would receive. Use inside mock_aws."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import boto3

REGION = "eu-west-1"


@dataclass
class Inbox:
    sns: Any
    topic_arn: str
    sqs: Any
    queue_url: str

    @classmethod
    def create(cls, name: str = "platform-notices") -> Inbox:
        sns = boto3.client("sns", region_name=REGION)
        sqs = boto3.client("sqs", region_name=REGION)
        topic_arn = sns.create_topic(Name=name)["TopicArn"]
        queue_url = sqs.create_queue(QueueName=f"{name}-inbox")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
            "Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
        return cls(sns, topic_arn, sqs, queue_url)

    def received(self) -> list[tuple[str, dict[str, Any]]]:
        """Every (subject, notice) delivered so far, taken off the queue."""
        found = []
        while True:
            answer = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10)
            batch = answer.get("Messages", [])
            if not batch:
                return found
            for message in batch:
                envelope = json.loads(message["Body"])  # SNS's own envelope around the message
                found.append((envelope.get("Subject", ""), json.loads(envelope["Message"])))
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
