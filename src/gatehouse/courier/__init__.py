"""The courier: consumes `send-otp`, delivers by its channels, records each outcome."""
