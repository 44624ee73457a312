"""Files shipped inside the package: the face detector models (see NOTICE.md for their licences)."""
