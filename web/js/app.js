// parley web client: entry point (being written, issue 12).
document.querySelector('#app').textContent = 'parley';
