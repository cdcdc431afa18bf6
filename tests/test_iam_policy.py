"""The test-side IAM evaluator itself, on the cases the cloud tests rely on."""

import pytest

from tests.iam_policy import decision

POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Action": ["s3:Get*", "s3:ListBucket"], "Resource": ["arn:aws:s3:::b", "arn:aws:s3:::b/*"]},
        {"Effect": "Allow", "Action": "s3:PutObject", "Resource": "arn:aws:s3:::b/out/*"},
        {
            "Effect": "Deny",
            "Action": "s3:*",
            "Resource": "arn:aws:s3:::b/*",
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        },
        {
            "Effect": "Allow",
            "Action": "ec2:RunInstances",
            "Resource": "arn:aws:ec2:*:*:subnet/*",
            "Condition": {"StringEquals": {"aws:ResourceTag/emr": "true"}},
        },
        {
            "Effect": "Allow",
            "Action": "ec2:CreateTags",
            "Resource": "*",
            "Condition": {
                "StringEquals": {"ec2:CreateAction": ["RunInstances", "CreateFleet"]},
                "ForAllValues:StringEquals": {"aws:TagKeys": ["emr", "Name"]},
            },
        },
        {
            "Effect": "Allow",
            "Action": "iam:PassRole",
            "Resource": "*",
            "Condition": {"StringLike": {"iam:PassedToService": "ec2.amazonaws.com*"}},
        },
        {
            "Effect": "Allow",
            "Action": "sqs:Send*",
            "Resource": "*",
            "Condition": {"Null": {"aws:RequestTag/emr": "false"}},
        },
    ],
}
TLS = {"aws:SecureTransport": "true"}


@pytest.mark.parametrize(
    ("action", "resource", "context", "expected"),
    [
        ("s3:GetObject", "arn:aws:s3:::b/raw/x.jpg", TLS, "Allow"),
        ("S3:getobject", "arn:aws:s3:::b/raw/x.jpg", TLS, "Allow"),  # actions ignore case
        ("s3:GetObject", "arn:aws:s3:::B/raw/x.jpg", TLS, "ImplicitDeny"),  # resources do not
        ("s3:GetObject", "arn:aws:s3:::bb/x", TLS, "ImplicitDeny"),
        ("s3:PutObject", "arn:aws:s3:::b/out/1/part.parquet", TLS, "Allow"),
        ("s3:PutObject", "arn:aws:s3:::b/raw/x.jpg", TLS, "ImplicitDeny"),
        ("s3:PutObject", "arn:aws:s3:::b/out/1", {"aws:SecureTransport": "false"}, "Deny"),
        ("s3:GetObject", "arn:aws:s3:::b/x", {}, "Allow"),  # the Deny's key is absent: it does not apply
        ("ec2:RunInstances", "arn:aws:ec2:eu-west-1:1:subnet/s-1", {"aws:ResourceTag/emr": "true"}, "Allow"),
        ("ec2:RunInstances", "arn:aws:ec2:eu-west-1:1:subnet/s-1", {"aws:ResourceTag/emr": "false"}, "ImplicitDeny"),
        ("ec2:RunInstances", "arn:aws:ec2:eu-west-1:1:subnet/s-1", {}, "ImplicitDeny"),
        ("ec2:CreateTags", "x", {"ec2:CreateAction": "CreateFleet", "aws:TagKeys": ["emr"]}, "Allow"),
        ("ec2:CreateTags", "x", {"ec2:CreateAction": "CreateFleet", "aws:TagKeys": ["emr", "x"]}, "ImplicitDeny"),
        ("ec2:CreateTags", "x", {"ec2:CreateAction": "CreateVpc", "aws:TagKeys": ["emr"]}, "ImplicitDeny"),
        ("iam:PassRole", "r", {"iam:PassedToService": "ec2.amazonaws.com.cn"}, "Allow"),
        ("iam:PassRole", "r", {"iam:PassedToService": "lambda.amazonaws.com"}, "ImplicitDeny"),
        ("sqs:SendMessage", "q", {"aws:RequestTag/emr": "true"}, "Allow"),
        ("sqs:SendMessage", "q", {}, "ImplicitDeny"),
    ],
)
def test_decisions_follow_the_documented_evaluation_logic(action, resource, context, expected):
    assert decision(POLICY, action, resource, context) == expected
