//! DynamoDB adapter (production).
