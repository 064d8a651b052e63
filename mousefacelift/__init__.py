"""Mouse-FaceLift: synthetic multi-view mouse data and GS-LRM reconstruction."""
